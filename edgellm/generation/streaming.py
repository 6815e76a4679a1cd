"""One sequence at a time: the views of the generation loop that hand out a sequence step by step.

`Generator` (generator.py) has these from `Streaming`: `stream` (the text of a prompt, piece by
piece), `token_stream` (its ids), `text_steps` (one piece per token), `row_steps` (the sampled
rows after each step: the server's path for folders it cannot batch) and `row_decoding` (the same
rows as a `Decoding`, for a loop that runs the model itself: the server's continuous batch).
Each runs the one loop, `Generator._search`.

A mixin of `Generator`: it holds the one-sequence views and uses the generator's settings,
encode_prompt and loop through `self`, so it imports nothing from generator.py.

Example:
    >>> import edgellm
    >>> model = edgellm.load("shakespeare")
    >>> text = "".join(model.stream("ROMEO:", max_new_tokens=12, seed=0))
    >>> text == model.generate("ROMEO:", max_new_tokens=12, seed=0).text
    True
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from edgellm.folder.generation_config import GenerationConfig
from edgellm.generation.decoding import Decoding
from edgellm.session.batching import fit_context


class Streaming:
    """The one-sequence methods of `Generator` (which supplies settings, encode_prompt, _grammars,
    _search and the model's config)."""

    def _one_sequence(self, prompt_ids: list[int], config: GenerationConfig | None, several: bool = False
                      ) -> tuple[GenerationConfig, list[int]]:
        """Checked settings for streaming one sequence (or, `several`, num_return_sequences
        sampled ones), and the prompt fitted to the context."""
        config = self.settings(config)
        if config.num_beams > 1 or (config.num_return_sequences > 1 and not several):
            raise ValueError("Streaming generates one sequence. Received: num_beams="
                             f"{config.num_beams}, num_return_sequences={config.num_return_sequences}. "
                             "Use generate() for several.")
        vocab = self.config.vocab_size
        if not isinstance(prompt_ids, (list, tuple, np.ndarray)) or not all(
                isinstance(i, (int, np.integer)) and not isinstance(i, bool) and 0 <= i < vocab for i in prompt_ids):
            raise ValueError(f"prompt_ids must be a list of token ids in [0, {vocab}). Received: "
                             f"{str(prompt_ids)[:60]}")
        return config, fit_context(list(prompt_ids), self.config.context_length, config.max_new_tokens,
                                   config.truncate)

    def token_stream(self, prompt_ids: list[int], config: GenerationConfig | None = None,
                     timings: dict | None = None, constraint=None) -> Iterator[int]:
        """Yield the generated ids of one prompt one at a time; returns the finish reason."""
        config, prompt_ids = self._one_sequence(prompt_ids, config)
        emitted, row = 0, None
        decoding = Decoding(self, [prompt_ids], config, grammars=self._grammars(constraint, 1, config))
        for search in self._search(decoding, {} if timings is None else timings):
            row = search.rows[0]
            while emitted < len(row.ids):
                yield row.ids[emitted]
                emitted += 1
        return row.finish_reason or "length"


    def stream(self, prompt: str, config: GenerationConfig | None = None, timings: dict | None = None,
               constraint=None, **settings) -> Iterator[str]:
        """Yield the continuation of `prompt` piece by piece: whole UTF-8 characters only, and
        never any part of a stop string. `timings`, if given, is filled as in `GenerationResult`;
        `constraint` as in `generate`.

        Example:
            >>> pieces = list(model.stream("ROMEO:", max_new_tokens=16, seed=0))
        """
        config = self.settings(config, **settings)
        for piece in self.text_steps(self.encode_prompt(prompt, config), config, timings, constraint):
            if piece:
                yield piece

    def text_steps(self, prompt_ids: list[int], config: GenerationConfig | None = None,
                   timings: dict | None = None, constraint=None) -> Iterator[str]:
        """The text of one sequence, one piece per generated token ("" while text is held back:
        an incomplete UTF-8 character, or what may be the start of a stop string), then what was
        held at the end. Returns the finished `Row` (its ids and finish_reason)."""
        config, _ = self._one_sequence(prompt_ids, config)  # one sequence: several or beams are refused
        steps = self.row_steps(prompt_ids, config, constraint, timings=timings)
        try:
            while True:
                yield next(steps)[0].text.take()
        except StopIteration as end:
            row = end.value[0]
        yield row.text.take()
        return row

    def row_steps(self, prompt_ids: list[int], config: GenerationConfig | None = None, constraint=None,
                  logprobs: int | None = None, timings: dict | None = None) -> Iterator[list]:
        """The sampled rows of one prompt (num_return_sequences of them, no beams) after each step,
        each tracking its text (`row.text.take()` hands out what is new); the server streams these.
        With `logprobs`, each row records its tokens' log-probabilities (search.py). Returns the
        finished rows, their text flushed and every finish_reason set."""
        decoding = self.row_decoding(prompt_ids, config, constraint, logprobs)
        for search in self._search(decoding, {} if timings is None else timings):
            yield search.rows
        return decoding.finish()

    def row_decoding(self, prompt_ids: list[int], config: GenerationConfig | None = None, constraint=None,
                     logprobs: int | None = None) -> Decoding:
        """The `Decoding` of `row_steps` (checked settings, the prompt fitted to the context), for a
        loop that runs the model itself: the server's continuous batch."""
        config, prompt_ids = self._one_sequence(prompt_ids, config, several=True)
        return Decoding(self, [prompt_ids], config, track_text=True, grammars=self._grammars(constraint, 1, config),
                        logprobs=logprobs)
