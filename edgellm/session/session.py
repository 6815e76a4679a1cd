"""model.onnx on onnxruntime: providers, threads, and the runs that hold a generation's KV cache.

A model folder's graph has one of two cache layouts (config.json's onnx.kv_cache), each with
its run in runs.py:

- "in_place" (what `edgellm export` writes): each layer's attention is onnxruntime's
  GroupQueryAttention. An `InPlaceRun` preallocates one (rows, kv heads, capacity, head_dim) buffer
  per key and value and binds it, through IO binding, as both past and present, so a step
  writes one new slot and reads only the filled part: no copy of the cache per token.
- "concat" (folders exported with --kv-cache concat, and older ones): the graph concatenates
  past and new keys/values, so each step returns a present cache one position longer that
  becomes the next step's past (`ConcatRun`).

Each run holds the cache of one call, so one `DecoderSession` serves several threads at once
(onnxruntime's `InferenceSession.run` is thread-safe and all per-call state is the run's).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgellm.folder.config import ModelConfig
from edgellm.folder.graph_check import check_graph
from edgellm.folder.model_folder import input_names, output_names
from edgellm.session import huge_pages
from edgellm.session.runs import ConcatRun, InPlaceRun, Run

__all__ = ["ConcatRun", "DecoderSession", "InPlaceRun", "Run", "choose_providers", "default_threads"]

DEFAULT_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")
MAX_THREADS = 1024  # onnxruntime's intra-op threads; the CLI's --threads range (cli/options.py)


def default_threads() -> int:
    return max(1, min(16, (os.cpu_count() or 2) // 2))


def choose_providers(requested: list[str] | None, available: list[str]) -> list[str]:
    """The providers to use: `requested` (checked), else CUDA when present, else CPU."""
    if requested is None:
        return [p for p in DEFAULT_PROVIDERS if p in available]
    if isinstance(requested, str):
        requested = [requested]
    if not isinstance(requested, (list, tuple)) or not all(isinstance(name, str) for name in requested):
        raise ValueError("providers must be a list of onnxruntime execution provider names. "
                         f"Received: providers={requested!r}. Available: {', '.join(available)}")
    for name in requested:
        if name not in available:
            raise ValueError(f"Execution provider {name!r} is not available in this onnxruntime. "
                             f"Received: providers={list(requested)}. Available: {', '.join(available)}")
    return list(requested)


class DecoderSession:
    """An onnxruntime session over a model folder's model.onnx.

    Args:
        path: model.onnx.
        config: the model's shape.
        providers: execution providers, in order of preference (default: CUDA if present, else CPU).
        threads: onnxruntime intra-op threads (default: half the logical cores, 1 to 16, as
            onnxruntime-genai does: a small model at batch 1 gains little from more threads, and
            spinning threads then compete with the app for the cores).
    """

    def __init__(self, path: Path, config: ModelConfig, providers: list[str] | None = None,
                 threads: int | None = None, kv_cache: str = "concat", capacity_mask: bool = False):
        import onnxruntime as ort

        self.config, self.kv_cache, self.capacity_mask = config, kv_cache, capacity_mask
        options = ort.SessionOptions()
        if threads is None:
            threads = default_threads()
        elif type(threads) is not int or not 1 <= threads <= MAX_THREADS:
            raise ValueError(f"threads must be an integer in [1, {MAX_THREADS}]. Received: threads={threads!r}")
        options.intra_op_num_threads = threads
        self.threads = threads
        options.log_severity_level = 3
        chosen = choose_providers(providers, ort.get_available_providers())
        try:
            with huge_pages.for_new_memory():  # the weights in 2 MB pages: fewer TLB misses a step
                self.session = ort.InferenceSession(str(path), options, providers=chosen)
        except Exception as error:  # onnxruntime raises its own exception types
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ValueError(f"Cannot load {path}: {first}. Re-export the model folder "
                             "(the file may be truncated or from another model).") from None
        self.providers = self.session.get_providers()
        self.device = "cuda" if self.providers[0] == "CUDAExecutionProvider" else "cpu"
        self.bind_cache = self.device != "cpu"  # a Concat cache stays on the device between steps
        expected = input_names(config.num_layers)
        found = [i.name for i in self.session.get_inputs()]
        if sorted(found) != sorted(expected):
            raise ValueError(f"{path} has inputs {found}, expected {expected} for {config.num_layers} "
                             "layers (config.json). Re-export the model folder.")
        self.input_names = expected
        self.output_names = output_names(config.num_layers)
        # the C-level session skips the Python wrapper's per-call checks (about 15 us a step, a
        # few percent of a token on a small model); same arguments, same results
        self.c_session = getattr(self.session, "_sess", None)
        self._run = self.c_session.run if self.c_session is not None else \
            (lambda names, feed, _: self.session.run(names, feed))
        check_graph(self.session, config, path)

    def empty_past(self, batch: int) -> list[np.ndarray]:
        shape = (batch, self.config.kv_heads, 0, self.config.head_dim)  # (batch, kv heads, 0, head_dim)
        return [np.zeros(shape, np.float32) for _ in range(2 * self.config.num_layers)]

    def forward(self, input_ids, attention_mask, position_ids, past):
        """One plain run (numpy in, numpy out). See `Generator.forward`."""
        feed = dict(zip(self.input_names, (input_ids, attention_mask, position_ids, *past)))
        logits, *present = self._run(self.output_names, feed, None)
        return logits, present

    def new_run(self, rows: int, capacity: int) -> Run:
        """The state of one generation of `rows` sequences of at most `capacity` positions."""
        return (InPlaceRun if self.kv_cache == "in_place" else ConcatRun)(self, rows, capacity)
