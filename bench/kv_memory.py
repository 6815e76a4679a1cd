"""Resident memory of the KV cache for a long-context model: one request, then 16 rows at once.

    python bench/kv_memory.py runs/smollm2                  # an exported folder
    python bench/kv_memory.py --twin runs/cache-twin        # make a small twin, export it, measure

A whole-context cache would cost rows x layers x 2 x kv heads x context x head_dim x 4 bytes
(SmolLM2-135M: 377 MB a row at 8,192 positions). `Generator.generate` sizes its cache to the
request (prompt + max_new_tokens); the server's `SlotRun` starts at 256 positions a row and
doubles as its rows grow (edgellm/session/slots.py). This prints the process's resident set
(VmRSS) after loading, after one request, and after 16 rows of a 100-token prompt decoded 64
steps in one SlotRun.

`--twin OUT` writes a random Hugging Face Llama folder with SmolLM2-135M's cache shape (30
layers, 3 key/value heads of 64, 8,192 positions) but 3 query heads and a 512-id vocabulary, so
that it exports in a minute or two, exports it (float32) to OUT and measures it: the cache
figures are SmolLM2's, the weights' are not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


def main(folder: str) -> None:
    import edgellm
    from edgellm.session.slots import SlotRun

    model = edgellm.load(folder, threads=2)
    cfg = model.config
    row_mb = cfg.num_layers * 2 * cfg.kv_heads * cfg.context_length * cfg.head_dim * 4 / 1e6
    print(f"whole-context cache: {row_mb:.0f} MB a row ({cfg.context_length} positions)")
    loaded = rss_mb()
    print(f"resident after loading: {loaded:.0f} MB")
    model.generate("Once upon a time", max_new_tokens=64, temperature=0)
    print(f"after one request of 64 new tokens: {rss_mb():.0f} MB (+{rss_mb() - loaded:.0f})")
    before = rss_mb()
    run = SlotRun(model.session, 16)
    width, steps = min(100, cfg.context_length // 2), min(64, cfg.context_length // 2 - 1)
    prompt = model.tokenizer.encode("The quick brown fox jumps over the lazy dog. " * 12)[:width]
    for _ in range(16):
        run.add(prompt)
    tokens = np.zeros(16, np.int64)
    for _ in range(steps):
        tokens = run.advance(tokens).argmax(-1)
    print(f"after 16 rows x ({len(prompt)} + {steps}) positions in one SlotRun: {rss_mb():.0f} MB (+{rss_mb() - before:.0f}; "
          f"16 whole-context rows would be {16 * row_mb:.0f} MB)")


def make_twin(out: Path) -> Path:
    """A random Llama folder with SmolLM2-135M's cache shape, exported to `out`; returns `out`."""
    import sys
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import pretrained_sources as sources  # the tests' writer of Hugging Face folders

    from edgellm.export.onnx_export import export

    sources.LLAMA.update(vocab_size=512, hidden_size=192, intermediate_size=256, num_hidden_layers=30,
                         num_attention_heads=3, num_key_value_heads=3, max_position_embeddings=8192,
                         rope_theta=100000.0)
    with tempfile.TemporaryDirectory() as scratch:
        # weights of std 0.02 rather than the tests' 0.2: 30 random layers of 0.2 grow the logits
        # beyond what the export's parity tolerance is sized for
        tensors = {k: v if "norm" in k else v / 10 for k, v in sources.llama_tensors().items()}
        source = sources.write_hf(Path(scratch) / "twin", "llama", tensors)
        export(source, out, weights="float32")
    return out


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", help="an exported model folder (with --twin: the folder to write)")
    parser.add_argument("--twin", action="store_true", help="first write and export the small twin to FOLDER")
    args = parser.parse_args()
    if args.twin:  # measured in a fresh process: TensorFlow (export) stays out of its memory
        import subprocess
        import sys

        make_twin(Path(args.folder))
        raise SystemExit(subprocess.call([sys.executable, __file__, args.folder]))
    main(args.folder)
