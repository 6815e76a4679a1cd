"""What one generation call decides at each step, apart from running the model: `Decoding`.

A `Decoding` holds one call's rows (each prompt repeated num_beams or num_return_sequences
times), their limits, their sampling state and their search (search.py). Whoever runs the model
hands it each step's logits of exactly those rows and runs the tokens it returns next. Two
loops do that: `Generator._search`, which owns a run of its own for the call, and the server's
continuous batch (server/batcher.py), which decodes many calls' rows together in one run. So a
request's settings (sampling, seed, penalties, stop strings, constraints, logprobs) mean the same
thing in both.

Imports: `Generator` (which makes a Decoding and passes itself) is named for types only; at run
time this module needs nothing from generator.py, so the two do not import each other.

Example:
    >>> import edgellm
    >>> model = edgellm.load("shakespeare")
    >>> decoding = Decoding(model, [model.tokenizer.encode("ROMEO:")], model.settings(max_new_tokens=4))
    >>> decoding.rows, decoding.steps
    (1, 4)
"""

from __future__ import annotations

import numpy as np

from edgellm.folder.generation_config import GenerationConfig
from edgellm.generation.sampling import SamplingState
from edgellm.generation.search import new_search

TYPE_CHECKING = False
if TYPE_CHECKING:
    from edgellm.generator import Generator


class Decoding:
    """The rows of one generation call and the choice of their next tokens.

    Args:
        generator: the loaded model (its context, vocabulary, tokenizer and stop ids).
        prompts: the prompts' token ids, each fitted to the context.
        config: checked settings.
        track_text: sampled rows keep their decoded text even without stop strings (streaming).
        grammars: one compiled constraint (or None) per prompt, or None.
        logprobs: sampled rows record their tokens' log-probabilities and this many alternatives.

    `row_prompts` holds each row's prompt, `limits` each row's most new tokens (max_new_tokens or
    what the context leaves), `steps` the most steps the call takes.
    """

    def __init__(self, generator: Generator, prompts: list[list[int]], config: GenerationConfig,
                 track_text: bool = False, grammars: list | None = None, logprobs: int | None = None):
        copies = config.num_beams if config.num_beams > 1 else config.num_return_sequences
        self.config, self.prompts = config, prompts
        self.row_prompts = [p for p in prompts for _ in range(copies)]
        context = generator.config.context_length
        self.limits = [min(config.max_new_tokens, context - len(p)) for p in self.row_prompts]
        self.steps = max(self.limits)
        matchers = None
        if grammars is not None:
            from edgellm.generation.constraints import RowMatchers

            matchers = RowMatchers([g for g in grammars for _ in range(copies)], config.stop_token_ids,
                                   generator.config.vocab_size, generator.folder.special_tokens.get("eos_token_id"))
        self.state = SamplingState(config, self.row_prompts, generator.config.vocab_size, matchers)
        self.search = new_search(self.state, [len(p) for p in prompts], self.limits, generator.tokenizer,
                                 track_text, logprobs)

    @property
    def rows(self) -> int:
        return len(self.row_prompts)

    @property
    def done(self) -> bool:
        return self.search.done

    def step(self, logits: np.ndarray, tokens: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """The logits of each row's newest position (rows, vocab) -> each row's next token (rows,),
        and for beams the row each one continues (the caller reorders the cache), else None.
        `tokens`: sampled rows' tokens chosen already from these logits by `sampler`'s settings and
        draws (see `Sampler.shared_key`)."""
        if tokens is None:
            return self.search.step(logits, self.state)
        return self.search.step(logits, self.state, tokens)

    @property
    def sampler(self):
        """The sampled rows' Sampler (None for beams)."""
        return getattr(self.search, "sampler", None)

    def finish(self) -> list:
        """The sampled rows at the end: what their text held back flushed, every finish_reason set."""
        for row in self.search.rows:
            if row.text is not None:
                row.text.finish()
            row.finish_reason = row.finish_reason or "length"
        return self.search.rows
