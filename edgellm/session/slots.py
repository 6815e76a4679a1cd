"""A KV cache whose rows come and go: `SlotRun`, the run under continuous batching.

A `Run` (runs.py) holds the rows of one generation call, which start together and share one
fill level. A `SlotRun` holds up to `capacity_rows` rows of any number of calls, each at its own
length: a row joins with `add(prompt_ids)` (its prompt runs alone, written straight into the
row's slice of the shared buffers) and leaves with `remove(slot)`, while `advance(tokens)` runs one
new token for every row in one batched call.

This rests on the in-place graph (config.json's onnx.kv_cache "in_place", what `edgellm export`
writes): its GroupQueryAttention reads each row's filled length from the index of the last 1 in
that row's attention mask and writes the new token's keys and values there, so rows of
different lengths decode in one call, each as it would alone. The active rows are kept in slots
0..active-1 (a leaving row's slot takes the last row), so a step runs no idle rows; it binds
views of that prefix of every buffer, one IO binding per batch size, made once. The buffers
are numpy memory shared with onnxruntime: a CPU run only (`supported` says whether a session
can have one).

The buffers hold `width` positions per row, not the model's whole context: they start at
INITIAL_WIDTH (or the context, if smaller) and double, rows copied over, when a row needs more.
So a model with a long context (SmolLM2: 8,192 positions, 377 MB a row at full width) costs
what its rows hold. The width does not change a row's logits (tests/test_batch_invariance.py
compares the server's run with the library's one-call run, whose cache is sized to the request),
except with ALiBi positions, where it changes their rounding: those runs keep the whole context.

Example:
    >>> import edgellm, numpy as np
    >>> model = edgellm.load("shakespeare")
    >>> run = SlotRun(model.session, 4)
    >>> first = run.add(model.tokenizer.encode("ROMEO:"))
    >>> second = run.add(model.tokenizer.encode("JULIET: O"))
    >>> run.advance(np.array([11, 12])).shape == (2, model.config.vocab_size)
    True
"""

from __future__ import annotations

import functools

import numpy as np

TYPE_CHECKING = False
if TYPE_CHECKING:
    from edgellm.session.session import DecoderSession

INITIAL_WIDTH = 256  # positions per row at first; doubled as rows grow, up to the context


def supported(decoder: DecoderSession) -> str | None:
    """None when `decoder` can run a SlotRun, else why not (one line)."""
    if decoder.kv_cache != "in_place":
        return (f"the model folder's cache is {decoder.kv_cache!r}; rows of different lengths decode together "
                "only with the in-place cache (re-export without --kv-cache concat)")
    if decoder.device != "cpu":
        return f"continuous batching runs on the CPU; this session runs on {decoder.device}"
    return None


class SlotRun:
    """Rows of different lengths in one KV cache, decoded together.

    Args:
        decoder: the session (an in-place folder on the CPU; see `supported`).
        capacity_rows: the most rows at once.
        width: positions per row to start with (default INITIAL_WIDTH, at most the context).

    Slots 0..active-1 hold the active rows. `add` and `remove` return slot numbers and moves
    so the caller can follow its rows.
    """

    def __init__(self, decoder: DecoderSession, capacity_rows: int, width: int = INITIAL_WIDTH):
        import onnxruntime as ort

        reason = supported(decoder)
        if reason is not None:
            raise ValueError(f"Cannot batch rows of different lengths: {reason}.")
        self.decoder, self.capacity_rows, self.active = decoder, capacity_rows, 0
        cfg = decoder.config
        self.context = cfg.context_length
        self._steps: dict[int, tuple] = {}  # batch size -> (binding, run), made once per width
        self._prompts: dict[int, tuple] = {}  # slot -> (binding, bind an array, run)
        self.width = 0
        self._buffers: list[np.ndarray] = []  # per past/present: (capacity_rows, kv heads, width, head_dim)
        self._mask = np.zeros((capacity_rows, 0), np.int64)  # 1 where a row's slot is filled
        if cfg.position_embedding == "alibi":  # its scores' rounding depends on the width: keep it fixed,
            width = self.context               # so a row gets the same numbers on an idle and a busy server
        self._widen(min(width, self.context))
        self._lengths = np.zeros(capacity_rows, np.int64)  # filled slots of each row
        self._ids = np.zeros((capacity_rows, 1), np.int64)  # the token each row runs next
        self._positions = np.zeros((capacity_rows, 1), np.int64)  # and its position
        self._logits = np.zeros((capacity_rows, 1, cfg.vocab_size), np.float32)
        self._last_position = self.context - 1  # as Run: a row past its limit computes nothing used
        self._ort = ort

    def add(self, prompt_ids: list[int]) -> tuple[int, np.ndarray]:
        """Run a prompt into a new row. Returns its slot and the logits of its last position (vocab,)."""
        if self.active == self.capacity_rows:
            raise ValueError(f"The run holds {self.capacity_rows} rows already; remove one first.")
        length = len(prompt_ids)
        if not 0 < length < self.context:
            raise ValueError(f"A prompt must have 1 to {self.context - 1} tokens. Received: {length} tokens.")
        self._widen(length + 1)
        slot = self.active
        self.active += 1
        binding, bind, run = self._prompt_binding(slot)
        ids = np.asarray(prompt_ids, np.int64)[None]
        mask, positions = np.ones_like(ids), np.arange(length, dtype=np.int64)[None]
        for name, array in (("input_ids", ids), ("attention_mask", mask), ("position_ids", positions)):
            bind(name, array)
        binding.bind_output("logits", "cpu")
        run()
        logits = binding.get_outputs()[0].numpy()[0, -1]
        self._mask[slot] = 0
        self._mask[slot, :length] = 1
        self._lengths[slot] = length
        self._positions[slot, 0] = length
        return slot, logits

    def copy(self, source: int, target: int) -> None:
        """Row `target` becomes a copy of row `source` (several choices of one prompt)."""
        filled = int(self._lengths[source])
        for buffer in self._buffers:
            buffer[target, :, :filled] = buffer[source, :, :filled]
        for array in (self._mask, self._lengths, self._ids, self._positions):
            array[target] = array[source]

    def fork(self, slot: int) -> int:
        """A new row that copies row `slot`. Returns the new row's slot."""
        if self.active == self.capacity_rows:
            raise ValueError(f"The run holds {self.capacity_rows} rows already; remove one first.")
        self.active += 1
        self.copy(slot, self.active - 1)
        return self.active - 1

    def remove(self, slot: int) -> int | None:
        """Drop row `slot`. The last row moves into its place: returns the slot it came from (None
        when `slot` was the last)."""
        last = self.active - 1
        self.active -= 1
        if slot == last:
            return None
        self.copy(last, slot)
        return last

    def advance(self, tokens: np.ndarray) -> np.ndarray:
        """Run one new token for every active row, tokens (active,) in slot order. Returns the
        logits of each row's new position (active, vocab), valid until the next step (as
        `Run.advance`: `Generator.step` runs either)."""
        rows = self.active
        assert rows and tokens.shape == (rows,)
        lengths = self._lengths[:rows]
        longest = int(lengths.max())
        assert longest < self.context, "a row's cache is full"
        self._widen(longest + 1)
        self._ids[:rows, 0] = tokens
        self._mask[np.arange(rows), lengths] = 1
        binding, run = self._step_binding(rows)
        if not self.decoder.capacity_mask:  # a graph that takes the mask of the filled part only
            mask = np.ascontiguousarray(self._mask[:rows, :longest + 1])
            binding.bind_cpu_input("attention_mask", mask)
        run()
        lengths += 1
        np.minimum(self._positions[:rows] + 1, self._last_position, out=self._positions[:rows])
        return self._logits[:rows, 0]

    def _widen(self, needed: int) -> None:
        """Make every row hold at least `needed` positions: the width doubles (up to the context),
        the filled slots are copied over and the IO bindings made again."""
        if needed <= self.width:
            return
        width = max(needed, min(2 * self.width, self.context))
        cfg = self.decoder.config
        shape = (self.capacity_rows, cfg.kv_heads, width, cfg.head_dim)
        buffers = [np.zeros(shape, np.float32) for _ in self.decoder.output_names[1:]]  # zeroed lazily by the OS
        for buffer, filled in zip(buffers, self._buffers):
            buffer[:, :, :self.width] = filled
        self._buffers = buffers
        mask = np.zeros((self.capacity_rows, width), np.int64)
        mask[:, :self.width] = self._mask
        self._mask, self.width = mask, width
        self._steps.clear()
        self._prompts.clear()

    def _step_binding(self, rows: int) -> tuple:
        """The IO binding of a one-token step of `rows` rows: views of slots 0..rows-1."""
        if rows not in self._steps:
            value = self._ort.OrtValue.ortvalue_from_numpy
            binding = self.decoder.session.io_binding()
            binding.bind_ortvalue_output("logits", value(self._logits[:rows]))
            binding.bind_ortvalue_input("input_ids", value(self._ids[:rows]))
            binding.bind_ortvalue_input("position_ids", value(self._positions[:rows]))
            if self.decoder.capacity_mask:
                binding.bind_ortvalue_input("attention_mask", value(self._mask[:rows]))
            for past, present, buffer in zip(self.decoder.input_names[3:], self.decoder.output_names[1:],
                                             self._buffers):
                part = value(buffer[:rows])
                binding.bind_ortvalue_input(past, part)
                binding.bind_ortvalue_output(present, part)  # the same memory: written in place
            self._steps[rows] = binding, functools.partial(self.decoder.session.run_with_iobinding, binding)
        return self._steps[rows]

    def _prompt_binding(self, slot: int) -> tuple:
        """The IO binding of a prompt run into row `slot` alone: its slice of every buffer."""
        if slot not in self._prompts:
            value = self._ort.OrtValue.ortvalue_from_numpy
            binding = self.decoder.session.io_binding()
            binding.bind_output("logits", "cpu")  # bound first: output 0
            for past, present, buffer in zip(self.decoder.input_names[3:], self.decoder.output_names[1:],
                                             self._buffers):
                part = value(buffer[slot:slot + 1])
                binding.bind_ortvalue_input(past, part)
                binding.bind_ortvalue_output(present, part)
            run = functools.partial(self.decoder.session.run_with_iobinding, binding)
            self._prompts[slot] = binding, binding.bind_cpu_input, run
        return self._prompts[slot]
