"""The summarizer's learning curve: ROUGE-L on the test split against training tokens.

    python bench/summarize_curve.py CHECKPOINT [CHECKPOINT ...] [--max-examples 198]

Each CHECKPOINT is a copy of the summarization run's checkpoint folder taken at one of its
evaluations (`cp -r runs/summarize runs/summarize-at-STEP` while it trains). Each is exported
(float32, through the same tf2onnx path and parity gate as `edgellm export`) to a scratch
folder and scored greedily by `edgellm eval --task summarization` on the first `--max-examples`
rows of data/debian-descriptions/test.jsonl.gz. Prints one Markdown row per checkpoint: its
step, the examples and padded tokens it has seen (steps x batch x context), its validation loss
per completion token, and ROUGE-1/2/L and chrF.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TEST = REPO / "data" / "debian-descriptions" / "test.jsonl.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--max-examples", type=int, default=198)
    args = parser.parse_args()

    import edgellm
    from edgellm.evaluate import evaluate
    from edgellm.export.onnx_export import export

    print("| step | examples seen | padded tokens seen | val loss | ROUGE-1 | ROUGE-2 | ROUGE-L | chrF |")
    print("|---|---|---|---|---|---|---|---|")
    for checkpoint in args.checkpoints:
        meta = json.loads((Path(checkpoint) / "checkpoint.json").read_text())
        opts, state = meta["training"], meta["state"]
        step = state["step"]
        examples = step * opts["batch_size"] * opts["grad_accum"]
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch) / "summarize"
            export(checkpoint, folder, weights="float32")
            m = evaluate(edgellm.load(folder), TEST, "summarization", max_examples=args.max_examples)
        print(f"| {step:,} | {examples:,} | {examples * opts['context_length']:,} | "
              f"{meta['metrics']['val_loss']:.3f} | {m['rouge1']:.1f} | {m['rouge2']:.1f} | {m['rougeL']:.1f} | "
              f"{m['chrf']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
