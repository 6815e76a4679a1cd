"""model.onnx on onnxruntime: providers, threads, and the cache of one generation call.

The graph concatenates past and new keys/values, so each step reads the past cache and returns
a present cache one position longer; the present becomes the next step's past. A `DecodeRun`
holds that cache for one call, so one `DecoderSession` serves several threads at once
(onnxruntime's `InferenceSession.run` is thread-safe and all per-call state is the run's).

On the CPU plain `run` with numpy arrays is used: measured on the 4-layer model, binding
preallocated past/present buffers through IO binding was about 8% slower per token (the
binding calls cost more than they save, as numpy inputs and outputs are not copied anyway).
On a GPU the cache stays on the device through IO binding.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgellm.config import ModelConfig
from edgellm.model_folder import input_names, output_names

DEFAULT_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


def default_threads() -> int:
    return max(1, min(16, (os.cpu_count() or 2) // 2))


def choose_providers(requested: list[str] | None, available: list[str]) -> list[str]:
    """The providers to use: `requested` (checked), else CUDA when present, else CPU."""
    if requested is None:
        return [p for p in DEFAULT_PROVIDERS if p in available]
    if isinstance(requested, str):
        requested = [requested]
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
                 threads: int | None = None):
        import onnxruntime as ort

        self.config = config
        options = ort.SessionOptions()
        if threads is None:
            threads = default_threads()
        elif isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive integer. Received: threads={threads!r}")
        options.intra_op_num_threads = threads
        self.threads = threads
        options.log_severity_level = 3
        chosen = choose_providers(providers, ort.get_available_providers())
        try:
            self.session = ort.InferenceSession(str(path), options, providers=chosen)
        except Exception as error:  # onnxruntime raises its own exception types
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ValueError(f"Cannot load {path}: {first}. Re-export the model folder "
                             "(the file may be truncated or from another model).") from None
        self.providers = self.session.get_providers()
        self.device = "cuda" if self.providers[0] == "CUDAExecutionProvider" else "cpu"
        self.io_binding = self.device != "cpu"  # keep the cache on the device between steps
        expected = input_names(config.num_layers)
        found = [i.name for i in self.session.get_inputs()]
        if sorted(found) != sorted(expected):
            raise ValueError(f"{path} has inputs {found}, expected {expected} for {config.num_layers} "
                             "layers (config.json). Re-export the model folder.")
        self.input_names = expected
        self.output_names = output_names(config.num_layers)
        # the C-level run skips the Python wrapper's per-call checks (about 15 us a step, a few
        # percent of a token on a small model); same arguments, same results
        self._run = getattr(self.session, "_sess", None)
        self._run = self._run.run if self._run is not None else (lambda names, feed, _: self.session.run(names, feed))

    def empty_past(self, batch: int) -> list[np.ndarray]:
        shape = (batch, self.config.num_heads, 0, self.config.head_dim)  # (batch, heads, 0, head_dim)
        return [np.zeros(shape, np.float32) for _ in range(2 * self.config.num_layers)]

    def forward(self, input_ids, attention_mask, position_ids, past):
        """One plain run (numpy in, numpy out). See `Generator.forward`."""
        feed = dict(zip(self.input_names, (input_ids, attention_mask, position_ids, *past)))
        logits, *present = self._run(self.output_names, feed, None)
        return logits, present

    def new_run(self, rows: int, forward=None) -> "DecodeRun":
        """The cache of one generation of `rows` sequences; `forward` (default: this session's)
        runs a step when the cache is not bound to a device."""
        return DecodeRun(self, rows, self.io_binding, forward or self.forward)


class DecodeRun:
    """The cache of one generation call, carried from step to step.

    `step(ids, mask, positions)` runs the model on (rows, seq) new ids, given the attention mask
    over (rows, past + seq) positions, and returns the logits of the last position (rows, vocab).
    Each step's present keys/values become the next step's past without a copy: on the CPU as
    the numpy arrays onnxruntime returns (they share its memory), on a GPU as OrtValues that stay
    on the device through IO binding, so only ids, mask, positions and logits cross to the host.
    """

    def __init__(self, decoder: DecoderSession, rows: int, bound: bool, forward):
        self.decoder, self.rows, self.bound, self._forward = decoder, rows, bound, forward
        self.past_length = 0
        self._past = decoder.empty_past(rows)  # numpy arrays, or OrtValues when bound
        if self.bound:
            import onnxruntime as ort

            self._binding = decoder.session.io_binding()
            self._past = [ort.OrtValue.ortvalue_from_numpy(p, decoder.device, 0) for p in self._past]

    def step(self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray) -> np.ndarray:
        rows, seq = input_ids.shape
        assert rows == self.rows and attention_mask.shape == (rows, self.past_length + seq)
        if self.bound:
            logits = self._bound_step(input_ids, attention_mask, position_ids)
        else:
            logits, self._past = self._forward(input_ids, attention_mask, position_ids, self._past)
        self.past_length += seq
        return logits[:, -1]  # (rows, vocab)

    def _bound_step(self, input_ids, attention_mask, position_ids) -> np.ndarray:
        binding, device = self._binding, self.decoder.device
        binding.bind_cpu_input("input_ids", input_ids)
        binding.bind_cpu_input("attention_mask", attention_mask)
        binding.bind_cpu_input("position_ids", position_ids)
        for name, value in zip(self.decoder.input_names[3:], self._past):
            binding.bind_ortvalue_input(name, value)
        binding.bind_output("logits", "cpu")  # sampling happens on the host
        for name in self.decoder.output_names[1:]:
            binding.bind_output(name, device, 0)  # the cache stays on the device
        self.decoder.session.run_with_iobinding(binding)
        logits, *self._past = binding.get_outputs()
        return logits.numpy()

    def reorder(self, parents: np.ndarray) -> None:
        """Row r continues the cache of row parents[r] (beam search)."""
        if self.bound:
            import onnxruntime as ort

            device = self.decoder.device
            self._past = [ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v.numpy()[parents]), device, 0)
                          for v in self._past]
        else:
            self._past = [p[parents] for p in self._past]
