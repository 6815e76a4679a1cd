"""Text generation on onnxruntime: the KV-cache loop, streaming, and results.

One loop (`Generator.token_stream`) serves every mode: greedy is temperature 0. The prompt is
run once (prefill, past length 0); each new token is then one decode step of sequence length 1
that reads the cached keys/values of all earlier positions.

Example:
    >>> import edgellm
    >>> model = edgellm.load("shakespeare")
    >>> print(model.generate("ROMEO:", max_new_tokens=20, temperature=0).text)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from edgellm import model_folder
from edgellm.sampling import GenerationConfig, SamplingState, next_token
from edgellm.tokenizer import Tokenizer


@dataclass
class GenerationResult:
    text: str
    token_ids: list[int]  # generated ids, without the prompt and without a stop id
    finish_reason: str  # "eos" (a stop id), or "length" (max_new_tokens or the context limit)
    timings: dict = field(default_factory=dict)  # prefill_ms, decode_tokens_per_s


class Generator:
    """A loaded model folder: an onnxruntime session, its tokenizer and default settings.

    Args:
        path: a model folder, or the name of a shipped model.
        providers: onnxruntime execution providers; default CUDA when available, else CPU.
        threads: intra-op threads for onnxruntime (default: onnxruntime's choice).
    """

    def __init__(self, path, providers: list[str] | None = None, threads: int | None = None):
        import onnxruntime as ort

        self.folder = model_folder.read(path)
        self.config = self.folder.config
        self.tokenizer = Tokenizer.load(self.folder.path / model_folder.TOKENIZER_FILE)
        if self.tokenizer.vocab_size != self.config.vocab_size:
            raise ValueError(f"Model folder {self.folder.path}: tokenizer has {self.tokenizer.vocab_size} "
                             f"tokens but the model has vocab_size {self.config.vocab_size}. Re-export it.")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        available = ort.get_available_providers()
        if providers is None:
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        try:
            self.session = ort.InferenceSession(str(self.folder.path / model_folder.MODEL_FILE), options,
                                                providers=providers)
        except Exception as error:  # onnxruntime raises its own exception types
            raise ValueError(f"Cannot load {self.folder.path / model_folder.MODEL_FILE}: "
                             f"{str(error).splitlines()[0]}. Re-export the model folder.") from None
        expected = model_folder.input_names(self.config.num_layers)
        found = [i.name for i in self.session.get_inputs()]
        if sorted(found) != sorted(expected):
            raise ValueError(f"{self.folder.path / model_folder.MODEL_FILE} has inputs {found}, "
                             f"expected {expected}. Re-export the model folder.")
        self._outputs = model_folder.output_names(self.config.num_layers)
        eos = self.folder.special_tokens.get("eos_token_id")
        defaults = {k: v for k, v in self.folder.generation.items() if k in GenerationConfig.__dataclass_fields__}
        defaults.setdefault("stop_token_ids", () if eos is None else (eos,))
        self.defaults = GenerationConfig(**defaults)

    # ---- the model, one step ---------------------------------------------------------------

    def empty_past(self, batch: int) -> list[np.ndarray]:
        shape = (batch, self.config.num_heads, 0, self.config.head_dim)  # (batch, heads, 0, head_dim)
        return [np.zeros(shape, np.float32) for _ in range(2 * self.config.num_layers)]

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray,
                past: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """One run of model.onnx.

        Args:
            input_ids, position_ids: (batch, seq) int64.
            attention_mask: (batch, past + seq) int64.
            past: [key_0, value_0, key_1, ...], each (batch, heads, past, head_dim) float32.
        Returns:
            logits (batch, seq, vocab) and the present keys/values, each (batch, heads, past + seq, head_dim).
        """
        feed = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}
        for i in range(self.config.num_layers):
            feed[f"past_key_values.{i}.key"] = past[2 * i]
            feed[f"past_key_values.{i}.value"] = past[2 * i + 1]
        logits, *present = self.session.run(self._outputs, feed)
        return logits, present

    # ---- the generation loop ---------------------------------------------------------------

    def settings(self, **overrides) -> GenerationConfig:
        """The folder's default settings with `overrides` applied and checked."""
        return self.defaults.replace(**overrides)

    def token_stream(self, prompt_ids: list[int], config: GenerationConfig, timings: dict | None = None
                     ) -> Iterator[int]:
        """Yield generated ids one at a time; returns the finish reason ("eos" or "length")."""
        if not prompt_ids:
            raise ValueError("The prompt is empty. Pass some text to continue.")
        context = self.config.context_length
        if len(prompt_ids) >= context:
            raise ValueError(f"The prompt is {len(prompt_ids)} tokens but the model's context is "
                             f"{context} tokens. Shorten the prompt.")
        timings = {} if timings is None else timings
        rng = np.random.default_rng(config.seed)
        state = SamplingState(config, list(prompt_ids))
        ids = np.array([prompt_ids], np.int64)  # (1, prompt)
        positions = np.arange(len(prompt_ids), dtype=np.int64)[None]
        past = self.empty_past(1)
        started = time.perf_counter()
        for step in range(config.max_new_tokens):
            total = len(state.token_ids)
            logits, past = self.forward(ids, np.ones((1, total), np.int64), positions, past)
            if step == 0:
                timings["prefill_ms"] = 1000 * (time.perf_counter() - started)
                decode_started = time.perf_counter()
            token = next_token(logits[0, -1], state, rng)
            if token in config.stop_token_ids:
                _decode_rate(timings, step, decode_started)
                return "eos"
            state.token_ids.append(token)
            yield token
            if total + 1 >= context:
                break
            ids = np.array([[token]], np.int64)
            positions = np.array([[total]], np.int64)
        _decode_rate(timings, step + 1, decode_started)
        return "length"

    # ---- text in, text out -----------------------------------------------------------------

    def stream(self, prompt: str, **settings) -> Iterator[str]:
        """Yield the continuation of `prompt` piece by piece, never splitting a UTF-8 character."""
        config = self.settings(**settings)
        decoder = self.tokenizer.stream_decoder()
        for token in self.token_stream(self.tokenizer.encode(prompt), config):
            piece = decoder.push(token)
            if piece:
                yield piece
        tail = decoder.flush()
        if tail:
            yield tail

    def generate(self, prompt: str, **settings) -> GenerationResult:
        """Continue `prompt`; settings are those of `GenerationConfig`."""
        config = self.settings(**settings)
        timings: dict = {}
        tokens = self.token_stream(self.tokenizer.encode(prompt), config, timings)
        ids = []
        while True:
            try:
                ids.append(next(tokens))
            except StopIteration as stop:
                finish_reason = stop.value
                break
        return GenerationResult(self.tokenizer.decode(ids), ids, finish_reason, timings)


def _decode_rate(timings: dict, decoded: int, since: float) -> None:
    elapsed = time.perf_counter() - since
    timings["decode_tokens_per_s"] = decoded / elapsed if decoded and elapsed > 0 else 0.0


def load(name_or_path, providers: list[str] | None = None, threads: int | None = None) -> Generator:
    """Load a model folder (or a shipped model by name) for generation.

    Example:
        >>> model = load("shakespeare")
        >>> result = model.generate("ROMEO:", max_new_tokens=16, temperature=0)
        >>> result.finish_reason in ("eos", "length")
        True
    """
    return Generator(name_or_path, providers=providers, threads=threads)
