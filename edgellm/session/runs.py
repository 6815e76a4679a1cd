"""The KV cache of one generation call, and each row's mask and next position: `Run` and the
run of each cache layout (`InPlaceRun`, `ConcatRun`; see session.py). A `DecoderSession` makes
them with `new_run`.

Imports: `DecoderSession` is named for types only (a run calls back into the session that made it
to run the model); session.py imports this module, never the other way at run time.
"""

from __future__ import annotations

import functools

import numpy as np

TYPE_CHECKING = False
if TYPE_CHECKING:
    from edgellm.session.session import DecoderSession


class Run:
    """The state of one generation call: the KV cache, and each row's mask and next position.

    `start(ids, mask, positions)` runs the prompts: ids (rows, width), their attention mask (0 at
    left padding) and positions. `advance(tokens)` then runs one new token per row, tokens
    (rows,), at each row's next position, the mask growing by a 1. Both return the logits of each
    row's last position (rows, vocab); after `advance` they are valid until the next step. The
    run keeps ids, positions and mask in its own arrays, so a step allocates nothing.
    Subclasses hold the cache: `_prompt`, `_one_token` and `_several_tokens` run the model,
    `_reorder_cache` follows beam search and `_rollback_cache` prompt lookup's rejected drafts.
    """

    def __init__(self, decoder: DecoderSession, rows: int, capacity: int):
        self.decoder, self.rows, self.capacity, self.past_length = decoder, rows, capacity, 0
        self._mask = np.zeros((rows, capacity), np.int64)  # 1 where filled, 0 at left padding and beyond
        self._ids = np.zeros((rows, 1), np.int64)  # the token each row runs next
        self._positions = np.zeros((rows, 1), np.int64)  # and its position
        # a row whose limit is the context finishes early but runs on with the batch: its position
        # stays at the last one the model has, and what it computes is never used
        self._last_position = decoder.config.context_length - 1

    def start(self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray) -> np.ndarray:
        rows, width = input_ids.shape
        assert rows == self.rows and self.past_length == 0 and width <= self.capacity
        self._mask[:, :width] = attention_mask
        logits = self._prompt(input_ids, self._mask_view(width), position_ids)
        self._positions[:, 0] = position_ids[:, -1] + 1
        self.past_length = width
        return logits

    def advance(self, tokens: np.ndarray) -> np.ndarray:
        assert self.past_length < self.capacity, "the run's cache is full"
        self._ids[:, 0] = tokens
        self._mask[:, self.past_length] = 1
        self.past_length += 1
        logits = self._one_token()
        np.minimum(self._positions + 1, self._last_position, out=self._positions)
        return logits

    def verify(self, input_ids: np.ndarray) -> np.ndarray:
        """Run several new tokens per row at once, input_ids (rows, n), at each row's next
        positions (prompt lookup's drafts). Returns the logits of every new position
        (rows, n, vocab); `rollback` then drops the positions that are not kept."""
        rows, n = input_ids.shape
        assert rows == self.rows and self.past_length + n <= self.capacity, "the run's cache is full"
        self._mask[:, self.past_length:self.past_length + n] = 1
        self.past_length += n
        logits = self._several_tokens(input_ids, self._positions + np.arange(n))
        self._positions += n
        return logits

    def rollback(self, length: int) -> None:
        """Forget every position from `length` on (drafts that were not kept): the next token
        goes to slot `length`."""
        assert 0 < length <= self.past_length
        if length == self.past_length:
            return
        self._mask[:, length:self.past_length] = 0
        self._positions -= self.past_length - length
        self.past_length = length
        self._rollback_cache(length)

    def reorder(self, parents: np.ndarray) -> None:
        """Row r continues row parents[r] (beam search): its cache, mask and position."""
        self._reorder_cache(parents)
        self._mask[:] = self._mask[parents]  # in place: the arrays may be bound
        self._positions[:] = self._positions[parents]

    def _mask_view(self, width: int) -> np.ndarray:
        """The mask of the filled positions, (rows, width), contiguous as onnxruntime needs."""
        mask = self._mask[:, :width]
        return mask if self.rows == 1 else np.ascontiguousarray(mask)  # one row is contiguous already


class InPlaceRun(Run):
    """The cache in preallocated buffers that the graph updates in place.

    Past and present of each layer are bound to one (rows, kv heads, capacity, head_dim) buffer
    once, as are the run's ids and positions and a logits array for one-token steps. With a
    folder whose graph takes a capacity-wide mask (config.json's onnx.capacity_mask) the whole
    mask is bound too, so a one-token step binds nothing and its input shapes never change
    (about 5 us a token less, measured on the 2-layer test model); else a step binds the mask of
    the filled positions. On a GPU the buffers live on the device, so only ids, mask, positions
    and logits cross.
    """

    def __init__(self, decoder: DecoderSession, rows: int, capacity: int):
        import onnxruntime as ort

        super().__init__(decoder, rows, capacity)
        cfg = decoder.config
        self._binding = binding = decoder.session.io_binding()
        c_binding = getattr(binding, "_iobinding", None)
        if decoder.c_session is not None and c_binding is not None:
            # C-level bind and run: the wrapper's per-call checks are Python work on every token
            self._bind_array = c_binding.bind_input  # (name, numpy array); see self._inputs
            self._run = functools.partial(decoder.c_session.run_with_iobinding, c_binding, None)
        else:
            self._bind_array = binding.bind_cpu_input
            self._run = functools.partial(decoder.session.run_with_iobinding, binding)
        self._inputs: tuple = ()  # the numpy arrays bound now, kept alive while they are bound
        binding.bind_output("logits", "cpu")  # bound first: output 0
        self._buffers = []
        shape = (rows, cfg.kv_heads, capacity, cfg.head_dim)
        for past, present in zip(decoder.input_names[3:], decoder.output_names[1:]):
            if decoder.device == "cpu":  # numpy memory, shared with onnxruntime (zeroed lazily by the OS)
                buffer = ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, np.float32))
            else:
                buffer = ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, decoder.device, 0)
            binding.bind_ortvalue_input(past, buffer)
            binding.bind_ortvalue_output(present, buffer)  # the same buffer: written in place
            self._buffers.append(buffer)
        self._row_bindings: dict = {}  # prompt lookup's: row -> (binding, bind an array, run)
        self._block_logits: dict = {}  # and its logits: n -> ((rows, n, vocab), an OrtValue per row)
        self._logits = np.zeros((rows, 1, cfg.vocab_size), np.float32)
        self._last_logits = self._logits[:, 0]  # (rows, vocab), rewritten by each one-token step

    def _prompt(self, input_ids, attention_mask, position_ids) -> np.ndarray:
        self._bind_array("input_ids", input_ids)
        self._bind_array("position_ids", position_ids)
        self._bind_array("attention_mask", attention_mask)
        self._inputs = (input_ids, position_ids, attention_mask)
        self._binding.bind_output("logits", "cpu")  # allocated for the prompt's length
        self._run()
        logits = self._binding.get_outputs()[0].numpy()[:, -1]
        self._bind_one_token_arrays()
        return logits

    def _one_token(self) -> np.ndarray:
        if not self.decoder.capacity_mask:
            mask = self._mask_view(self.past_length)
            self._bind_array("attention_mask", mask)
            self._inputs = (mask,)
        self._run()
        return self._last_logits

    def _several_tokens(self, input_ids: np.ndarray, position_ids: np.ndarray) -> np.ndarray:
        # the mask of the filled positions, not the whole cache's: the graph's causal mask puts the
        # n queries at its last n positions. onnxruntime's GroupQueryAttention takes several new
        # tokens after a past at batch 1 only, so with several rows each runs alone, over its own
        # slice of the buffers. Bindings of their own leave the one-token step's as they are.
        if self.rows > 1 and self.decoder.device != "cpu":
            raise ValueError("prompt_lookup_num_tokens needs batch 1 on a GPU with an in-place cache (onnxruntime's "
                             f"GroupQueryAttention). Received: {self.rows} rows. Set prompt_lookup_num_tokens=0, "
                             "or export with --kv-cache concat.")
        import onnxruntime as ort

        n = input_ids.shape[1]
        if n not in self._block_logits:  # (rows, n, vocab), written by the runs below
            logits = np.zeros((self.rows, n, self.decoder.config.vocab_size), np.float32)
            self._block_logits[n] = logits, [ort.OrtValue.ortvalue_from_numpy(logits[r:r + 1])
                                             for r in range(self.rows)]
        logits, parts = self._block_logits[n]
        mask = self._mask_view(self.past_length)
        for row in range(self.rows):
            one = slice(row, row + 1)
            binding, bind, run = self._row_binding(row)
            for name, array in (("input_ids", input_ids[one]), ("attention_mask", mask[one]),
                                ("position_ids", position_ids[one])):
                bind(name, np.ascontiguousarray(array))
            binding.bind_ortvalue_output("logits", parts[row])
            run()
        return logits

    def _row_binding(self, row: int):
        """An IO binding of row `row` alone and the call that runs it: past and present are the
        row's slice of each buffer (the same memory), bound once per run."""
        import onnxruntime as ort

        if row not in self._row_bindings:
            binding = self.decoder.session.io_binding()
            binding.bind_output("logits", "cpu")  # bound first: output 0 (the run binds its array)
            for past, present, buffer in zip(self.decoder.input_names[3:], self.decoder.output_names[1:],
                                             self._buffers):
                part = buffer if self.rows == 1 else ort.OrtValue.ortvalue_from_numpy(buffer.numpy()[row:row + 1])
                binding.bind_ortvalue_input(past, part)
                binding.bind_ortvalue_output(present, part)
            c_binding = getattr(binding, "_iobinding", None)
            if self.decoder.c_session is not None and c_binding is not None:  # as in __init__
                run = functools.partial(self.decoder.c_session.run_with_iobinding, c_binding, None)
                self._row_bindings[row] = (binding, c_binding.bind_input, run)
            else:
                run = functools.partial(self.decoder.session.run_with_iobinding, binding)
                self._row_bindings[row] = (binding, binding.bind_cpu_input, run)
        return self._row_bindings[row]

    def _rollback_cache(self, length: int) -> None:
        pass  # slots from `length` on are masked out and overwritten by the next tokens

    def _bind_one_token_arrays(self) -> None:
        import onnxruntime as ort

        self._binding.bind_ortvalue_input("input_ids", ort.OrtValue.ortvalue_from_numpy(self._ids))
        self._binding.bind_ortvalue_input("position_ids", ort.OrtValue.ortvalue_from_numpy(self._positions))
        self._binding.bind_ortvalue_output("logits", ort.OrtValue.ortvalue_from_numpy(self._logits))
        if self.decoder.capacity_mask:
            self._binding.bind_ortvalue_input("attention_mask", ort.OrtValue.ortvalue_from_numpy(self._mask))

    def _reorder_cache(self, parents: np.ndarray) -> None:
        filled = self.past_length
        for buffer in self._buffers:
            cache = buffer.numpy()  # the buffer itself on the CPU, a host copy on a GPU
            cache[:, :, :filled] = cache[parents, :, :filled]
            if self.decoder.device != "cpu":
                buffer.update_inplace(cache)


class ConcatRun(Run):
    """The cache of a Concat graph, carried from step to step.

    Each step's present keys/values become the next step's past without a copy: on the CPU as
    the numpy arrays onnxruntime returns (they share its memory; measured on the 4-layer model,
    binding them through IO binding was about 8% slower), on a GPU as OrtValues that stay on the
    device through IO binding.
    """

    def __init__(self, decoder: DecoderSession, rows: int, capacity: int):
        super().__init__(decoder, rows, capacity)
        self.bound = decoder.bind_cache
        self._past = decoder.empty_past(rows)  # numpy arrays, or OrtValues when bound
        if self.bound:
            import onnxruntime as ort

            self._binding = decoder.session.io_binding()
            self._past = [ort.OrtValue.ortvalue_from_numpy(p, decoder.device, 0) for p in self._past]

    def _prompt(self, input_ids, attention_mask, position_ids) -> np.ndarray:
        if self.bound:
            return self._bound_step(input_ids, attention_mask, position_ids)[:, -1]
        logits, self._past = self.decoder.forward(input_ids, attention_mask, position_ids, self._past)
        return logits[:, -1]  # (rows, vocab)

    def _one_token(self) -> np.ndarray:
        return self._prompt(self._ids, self._mask_view(self.past_length), self._positions)

    def _several_tokens(self, input_ids: np.ndarray, position_ids: np.ndarray) -> np.ndarray:
        if self.bound:
            return self._bound_step(input_ids, self._mask_view(self.past_length), position_ids)
        logits, self._past = self.decoder.forward(input_ids, self._mask_view(self.past_length), position_ids,
                                                  self._past)
        return logits  # (rows, n, vocab)

    def _rollback_cache(self, length: int) -> None:
        if self.bound:
            import onnxruntime as ort

            device = self.decoder.device
            self._past = [ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v.numpy()[:, :, :length]), device, 0)
                          for v in self._past]
        else:
            self._past = [np.ascontiguousarray(p[:, :, :length]) for p in self._past]

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

    def _reorder_cache(self, parents: np.ndarray) -> None:
        if self.bound:
            import onnxruntime as ort

            device = self.decoder.device
            self._past = [ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v.numpy()[parents]), device, 0)
                          for v in self._past]
        else:
            self._past = [p[parents] for p in self._past]
