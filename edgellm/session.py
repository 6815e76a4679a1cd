"""model.onnx on onnxruntime: providers, threads, and the per-call decode buffers.

The graph concatenates past and new keys/values, so each step reads the past cache and writes
a present cache one position longer. A `DecodeRun` preallocates two buffers per cache tensor,
big enough for the whole generation, and binds them with onnxruntime's IO binding: step t
reads buffer A and writes buffer B, step t + 1 reads B and writes A. No cache tensor is
allocated or copied by Python after the first step, and logits land in a preallocated array.

A `DecodeRun` belongs to one call, so one `DecoderSession` serves several threads at once
(onnxruntime's `InferenceSession.run` is thread-safe).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgellm.config import ModelConfig
from edgellm.model_folder import input_names, output_names

DEFAULT_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


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
        threads: onnxruntime intra-op threads (default: onnxruntime's choice, one per core).
    """

    def __init__(self, path: Path, config: ModelConfig, providers: list[str] | None = None,
                 threads: int | None = None):
        import onnxruntime as ort

        self.config = config
        options = ort.SessionOptions()
        if threads is not None:
            if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
                raise ValueError(f"threads must be a positive integer. Received: threads={threads!r}")
            options.intra_op_num_threads = threads
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
        expected = input_names(config.num_layers)
        found = [i.name for i in self.session.get_inputs()]
        if sorted(found) != sorted(expected):
            raise ValueError(f"{path} has inputs {found}, expected {expected} for {config.num_layers} "
                             "layers (config.json). Re-export the model folder.")
        self.input_names = expected
        self.output_names = output_names(config.num_layers)

    def empty_past(self, batch: int) -> list[np.ndarray]:
        shape = (batch, self.config.num_heads, 0, self.config.head_dim)  # (batch, heads, 0, head_dim)
        return [np.zeros(shape, np.float32) for _ in range(2 * self.config.num_layers)]

    def forward(self, input_ids, attention_mask, position_ids, past):
        """One plain run (numpy in, numpy out). See `Generator.forward`."""
        feed = dict(zip(self.input_names, [input_ids, attention_mask, position_ids, *past]))
        logits, *present = self.session.run(self.output_names, feed)
        return logits, present

    def new_run(self, rows: int, capacity: int) -> "DecodeRun":
        """Buffers and a binding for one generation of `rows` sequences up to `capacity` positions."""
        return DecodeRun(self, rows, capacity)


class _Binding:
    """onnxruntime's IO binding, bound through its C-level object when this onnxruntime has one.

    The public `IOBinding` methods rebuild a device object and run capture checks on every
    call; a decode step binds 2 + 4 * layers tensors, so at batch 1 on a small model that
    Python work is a measurable part of each token. Both paths bind the same buffers.
    """

    def __init__(self, session, device: str):
        import onnxruntime as ort

        self._session, self._binding = session, session.io_binding()
        self._fast = hasattr(self._binding, "_iobinding") and hasattr(session, "_sess")
        if self._fast:
            try:
                self._device = ort.OrtDevice.make(device, 0)._get_c_device()
                self._c, self._c_session = self._binding._iobinding, session._sess
            except (AttributeError, TypeError):
                self._fast = False
        self._device_name = device
        self._arrays: dict[str, np.ndarray] = {}  # keeps bound host arrays alive

    def input_array(self, name: str, array: np.ndarray) -> None:
        self._arrays[name] = array
        if self._fast:
            self._c.bind_input(name, array)
        else:
            self._binding.bind_cpu_input(name, array)

    def buffer(self, name: str, shape: tuple, pointer: int, output: bool, host: bool = False) -> None:
        if self._fast:
            device = self._host if host else self._device
            (self._c.bind_output if output else self._c.bind_input)(name, device, np.float32, shape, pointer)
        else:
            bind = self._binding.bind_output if output else self._binding.bind_input
            bind(name, "cpu" if host else self._device_name, 0, np.float32, shape, pointer)

    @property
    def _host(self):
        import onnxruntime as ort

        host = ort.OrtDevice.make("cpu", 0)._get_c_device()
        self.__dict__["_host"] = host  # computed once
        return host

    def run(self) -> None:
        if self._fast:
            self._c_session.run_with_iobinding(self._c, None)
        else:
            self._session.run_with_iobinding(self._binding)


class DecodeRun:
    """The cache buffers and IO binding of one generation call.

    `step(ids, mask, positions)` runs the model on (rows, seq) new ids, given the attention mask
    over (rows, past + seq) positions, and returns the logits of the last position (rows, vocab).
    """

    def __init__(self, decoder: DecoderSession, rows: int, capacity: int):
        import onnxruntime as ort

        cfg = decoder.config
        self.decoder, self.rows, self.capacity = decoder, rows, capacity
        self.past_length = 0
        self._binding = _Binding(decoder.session, decoder.device)
        self._per_position = cfg.num_heads * cfg.head_dim  # floats per row and position
        size = rows * capacity * self._per_position
        device = decoder.device
        # two flat buffers per cache tensor: [read, write]; they swap roles every step
        if device == "cpu":
            self._buffers = [[np.empty(size, np.float32) for _ in range(2)] for _ in range(2 * cfg.num_layers)]
            self._pointers = [[b.ctypes.data for b in pair] for pair in self._buffers]
        else:
            self._buffers = [[ort.OrtValue.ortvalue_from_shape_and_type([size], np.float32, device, 0)
                              for _ in range(2)] for _ in range(2 * cfg.num_layers)]
            self._pointers = [[b.data_ptr() for b in pair] for pair in self._buffers]
        self._read = 0
        self._logits = np.empty((rows, cfg.vocab_size), np.float32)  # decode steps (seq = 1)
        self._past_names = decoder.input_names[3:]
        self._present_names = decoder.output_names[1:]
        self._heads, self._head_dim = cfg.num_heads, cfg.head_dim

    def step(self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray) -> np.ndarray:
        rows, seq = input_ids.shape
        past, total = self.past_length, self.past_length + seq
        assert rows == self.rows and total <= self.capacity and attention_mask.shape == (rows, total)
        binding, read = self._binding, self._read
        binding.input_array("input_ids", input_ids)
        binding.input_array("attention_mask", attention_mask)
        binding.input_array("position_ids", position_ids)
        past_shape = (rows, self._heads, past, self._head_dim)  # (rows, heads, past, head_dim)
        present_shape = (rows, self._heads, total, self._head_dim)  # (rows, heads, past + seq, head_dim)
        for name, pointers in zip(self._past_names, self._pointers):
            binding.buffer(name, past_shape, pointers[read], output=False)
        for name, pointers in zip(self._present_names, self._pointers):
            binding.buffer(name, present_shape, pointers[1 - read], output=True)
        logits = self._logits if seq == 1 else np.empty((rows, seq, self._logits.shape[-1]), np.float32)
        binding.buffer("logits", logits.shape if seq > 1 else (rows, 1, logits.shape[-1]), logits.ctypes.data,
                       output=True, host=True)
        binding.run()
        self._read, self.past_length = 1 - read, total
        return logits if seq == 1 else logits[:, -1]

    def reorder(self, parents: np.ndarray) -> None:
        """Row r continues the cache of row parents[r] (beam search)."""
        n = self.rows * self.past_length * self._per_position
        for pair in self._buffers:
            buffer = pair[self._read]
            if isinstance(buffer, np.ndarray):
                view = buffer[:n].reshape(self.rows, -1)  # (rows, heads * past * head_dim)
                view[:] = view[parents]
            else:  # a device buffer: through host memory
                host = buffer.numpy()
                host[:n] = host[:n].reshape(self.rows, -1)[parents].reshape(-1)
                buffer.update_inplace(host)
