"""Smaller model.onnx variants (int8, int4 and float16 weights) and how they compare with float32.

int8 and int4 are block-wise weights (blockwise.py: onnxruntime's MatMulNBits, blocks of 32, and
embedding tables looked up with standard operators), whose results for a row do not depend on
the other rows of a call; float16 stores weights in half precision and keeps float32 inputs and
outputs, so the runtime and onnxruntime-genai feed the same tensors whatever the variant. Each variant is measured against the
float32 model on held-out text: file size, perplexity (edgellm.generation.scoring, the runtime's own) and
decode tokens/s.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

VARIANTS = ("float32", "int8", "int4", "float16")


def make_variant(float32_path: Path, out_path: Path, variant: str) -> None:
    """Write `variant` of the float32 ONNX model at `float32_path` to `out_path`."""
    if variant == "float32":
        shutil.copy(float32_path, out_path)
    elif variant in ("int8", "int4"):
        from edgellm.export import blockwise

        blockwise.quantize(float32_path, out_path, variant)
    elif variant == "float16":
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(onnx.load(str(float32_path)), keep_io_types=True)
        onnx.save(model, str(out_path))
    else:
        raise ValueError(f"Unknown model variant. Received: {variant!r}. Choose one of {VARIANTS}.")


def validation_windows(meta: dict, tokenizer, context_length: int, max_windows: int = 512) -> np.ndarray | None:
    """Held-out windows (n, context + 1) from the checkpoint's text files, or None if they are gone
    (or it is a task model, trained on examples: its quality is measured by `edgellm eval --task`)."""
    from edgellm.training.data import build_corpus, read_texts

    files = [f for f in meta.get("data") or [] if Path(f).is_file() and f != meta.get("task_examples")]
    if not files:
        return None
    val_fraction = (meta.get("training") or {}).get("val_fraction", 0.1)
    ids = build_corpus(read_texts(files), tokenizer, val_fraction).val_ids
    n = min(max_windows, (len(ids) - 1) // context_length)
    if n < 1:
        return None
    return np.stack([ids[i * context_length : i * context_length + context_length + 1] for i in range(n)])


def measure(folder: Path, windows: np.ndarray | None, prompt: str = "\n", new_tokens: int = 64) -> dict:
    """File size, validation perplexity (if windows) and greedy decode tokens/s of a model folder."""
    from edgellm.generator import Generator
    from edgellm.generation.scoring import score_windows

    runtime = Generator(folder, providers=["CPUExecutionProvider"])
    figures = {"file_bytes": (Path(folder) / "model.onnx").stat().st_size}
    if windows is not None:  # scored by the code behind Generator.score and `edgellm eval`
        loss = -float(score_windows(runtime, windows).mean())
        figures["val_loss"] = loss
        figures["val_perplexity"] = float(np.exp(loss))
    runtime.generate(prompt, max_new_tokens=8, temperature=0.0, stop_token_ids=())  # warm-up
    rates = [runtime.generate(prompt, max_new_tokens=new_tokens, temperature=0.0, stop_token_ids=())
             .timings["decode_tokens_per_s"] for _ in range(3)]
    figures["decode_tokens_per_s"] = float(np.median(rates))
    return figures
