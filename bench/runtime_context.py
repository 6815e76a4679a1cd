"""Time per token late in a long context against early: position 900 vs position 10 of 1,024.

Needs a model with a 1,024-token context. Without --model, one is made: the shipped model's
shape (4 layers, width 256, vocabulary 2,048) with context 1,024, trained for 2 steps on
tinyshakespeare and exported (needs the train extra; about two minutes on two cores). Speed
does not depend on what the weights learned, only on their shapes.

    python bench/runtime_context.py [--model FOLDER] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def make_long_context_model(workdir: Path) -> Path:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from edgellm.export.onnx_export import export
    from edgellm.training.train import train

    checkpoint, folder = workdir / "run", workdir / "long-context"
    train([str(REPO / "data" / "tinyshakespeare" / "input.txt")], str(checkpoint), vocab_size=2048, layers=4,
          heads=4, width=256, context=1024, batch_size=2, steps=2, warmup=1, eval_interval=2, verbose=0)
    export(checkpoint, folder)
    return folder


def genai_time_per_token(folder: Path, prompt: list[int], steps: int = 16) -> float | None:
    """onnxruntime-genai on the same folder: ms per decode step after a prompt of len(prompt)."""
    try:
        import onnxruntime_genai as og
    except ImportError:
        return None
    import time

    model = og.Model(str(folder))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt) + steps + 1, min_length=len(prompt) + steps + 1,
                              do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(prompt)
    generator.generate_next_token()
    started = time.perf_counter()
    for _ in range(steps):
        generator.generate_next_token()
    return 1000 * (time.perf_counter() - started) / steps


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a model folder with a 1,024-token context (default: make one)")
    parser.add_argument("--keep", help="write the model made for the bench here (to reuse with --model)")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args(argv)

    import edgellm
    from edgellm.benchmark import prompt_of, time_per_token

    with tempfile.TemporaryDirectory() as workdir:
        folder = Path(args.model) if args.model else make_long_context_model(Path(args.keep or workdir))
        model = edgellm.load(folder, providers=["CPUExecutionProvider"], threads=args.threads)
        if model.config.context_length < 1024:
            raise SystemExit(f"{folder} has a context of {model.config.context_length}; this bench needs 1,024.")
        early, late, genai_early, genai_late = [], [], [], []
        for _ in range(args.repeats):  # alternate, so a busy moment hits both
            early.append(time_per_token(model, 10, repeats=1))
            late.append(time_per_token(model, 900, repeats=1))
            if args.threads is None:  # the same default thread count as edgellm's
                genai_early.append(genai_time_per_token(folder, prompt_of(model, 10)))
                genai_late.append(genai_time_per_token(folder, prompt_of(model, 900)))
    a, b = statistics.median(early), statistics.median(late)
    print(f"model: {model.config.num_layers} layers, width {model.config.hidden_size}, context "
          f"{model.config.context_length}; batch 1, threads {model.session.threads}, {args.repeats} alternating runs")
    print(f"time per token at position 10:  {a:.3f} ms")
    print(f"time per token at position 900: {b:.3f} ms")
    print(f"ratio 900 / 10: {b / a:.2f}x")
    if genai_early and None not in genai_early:
        ga, gb = statistics.median(genai_early), statistics.median(genai_late)
        print(f"onnxruntime-genai on the same folder: {ga:.3f} ms at 10, {gb:.3f} ms at 900, ratio {gb / ga:.2f}x")


if __name__ == "__main__":
    main()
