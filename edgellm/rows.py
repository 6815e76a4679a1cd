"""Sampled sequences in the generation loop: each row's ids, text and finish reason.

`SampleSearch.step` is what one step of the loop does for sampling and greedy decoding (beam
search has its own, in beam.py): choose one token per row, then finish the rows that end, with
"eos" (a stop token id), "stop" (a stop string, found in the row's decoded text) or "length"
(the row's limit: max_new_tokens or the context). Finished rows keep running until the whole
batch is done, but what they sample is no longer recorded.
"""

from __future__ import annotations

import numpy as np

from edgellm.sampling import Sampler, SamplingState
from edgellm.stopping import TextTracker


class Row:
    """One sampled sequence: its ids, limit, text and finish reason."""

    __slots__ = ("ids", "limit", "text", "finish_reason")

    def __init__(self, limit: int, text: TextTracker | None):
        self.ids: list[int] = []
        self.limit, self.text, self.finish_reason = limit, text, None


class SampleSearch:
    """The sampling (and greedy) step of the loop: choose, then finish rows that end."""

    def __init__(self, state: SamplingState, rows: list[Row], sequence_numbers: list[int]):
        self.sampler = Sampler(state.config, sequence_numbers)
        self.rows = rows
        self.stop_ids = set(state.config.stop_token_ids)
        self.live = len(rows)

    @property
    def done(self) -> bool:
        return self.live == 0

    def step(self, logits: np.ndarray, state: SamplingState) -> tuple[np.ndarray, None]:
        tokens = self.sampler.choose(logits, state)
        for row, token in zip(self.rows, tokens.tolist()):
            if row.finish_reason is not None:
                continue
            if token in self.stop_ids:
                row.finish_reason = "eos"
            else:
                row.ids.append(token)
                if row.text is not None and row.text.push(token):
                    row.finish_reason = "stop"
                elif len(row.ids) >= row.limit:
                    row.finish_reason = "length"
            if row.finish_reason is not None:
                self.live -= 1
        state.append(tokens)
        return tokens, None
