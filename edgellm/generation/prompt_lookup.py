"""Prompt-lookup decoding: draft the next tokens from the text so far, check them in one run.

A model that copies from its prompt (a summary quoting its source, a translation keeping names
and numbers, an answer naming a place of the story) often writes next what followed the same
few tokens earlier. With `prompt_lookup_num_tokens` = k, before each model run the loop looks
for the last `MAX_NGRAM` tokens (then fewer, down to 1) earlier in the prompt + output, takes
the up to k tokens that followed that earlier occurrence as a draft, and runs the current token
and the draft together (one run of 1 + k positions instead of one). The search then chooses
tokens as always, one position at a time, from those logits: while its choice equals the draft
token, the next position's logits are already there; at the first difference (or after the
last draft token) the cache is rolled back past the unused drafts and the chosen token starts
the next run.

Each chosen token comes from the model's own logits for exactly the tokens before it, so the
output is the plain loop's: greedy is identical, and sampling draws from the same distribution
with the same random numbers (a seed gives the same text with and without drafts). This is
speculative sampling with a draft that is certain of one token: it accepts a draft token with
the probability the model gives it. Beam search does not draft (refused by GenerationConfig).

It pays when a run of 1 + k positions costs little more than a run of one (small batches,
where each step reads all the weights) and drafts are often right; bench/prompt_lookup.py
measures both and docs/runtime.md gives today's figures.

Example:
    >>> find_draft([5, 6, 7, 8, 1, 5, 6], 3)
    [7, 8, 1]
    >>> find_draft([1, 2, 3], 3)
    []
"""

from __future__ import annotations

import numpy as np

MAX_NGRAM = 2  # the longest n-gram matched, as transformers' max_matching_ngram_size


def find_draft(ids, num_tokens: int, max_ngram: int = MAX_NGRAM) -> list[int]:
    """The up to `num_tokens` ids that followed the latest earlier occurrence of the last n ids
    of `ids`, trying n = max_ngram down to 1; [] when none of them occurred before.

    Args:
        ids: the prompt and the output so far (token ids).
        num_tokens: the longest draft.
        max_ngram: the longest n-gram to match.
    """
    ids = np.asarray(ids)
    for n in range(min(max_ngram, len(ids) - 1), 0, -1):
        windows = np.lib.stride_tricks.sliding_window_view(ids[:-1], n)  # ids[i:i + n], i + n < len(ids)
        found = np.flatnonzero((windows == ids[-n:]).all(1))
        if found.size:
            start = int(found[-1]) + n
            return ids[start:start + num_tokens].tolist()
    return []


class LookupRun:
    """A generation run (`session.Run`) that drafts and verifies: `advance(tokens)` gives the
    logits of each row's next position, as `Run.advance` does, from a verified block while the
    chosen tokens follow the draft.

    With several rows, one verification runs every row's draft; a block serves a position while
    every running row chose its draft token there (rows finished are not waited for).

    Args:
        run: the run, after `start`.
        search: the loop's search (its `rows`: finished rows and limits).
        state: the sampling state (its `histories`: each row's prompt and output).
        num_tokens: the longest draft (prompt_lookup_num_tokens).
    """

    def __init__(self, run, search, state, num_tokens: int):
        self.run, self.search, self.state, self.num_tokens = run, search, state, num_tokens
        self.block = None  # logits (rows, 1 + drafted, vocab) of the last verification
        self.drafts: list[list[int]] = []
        self.served = 0  # the block position whose logits were handed out last
        self.base = 0  # the run's length before the block's first token
        self.drafted = self.accepted = self.verifications = 0  # tokens drafted and kept, runs of drafts

    @property
    def past_length(self) -> int:
        return self.run.past_length

    def advance(self, tokens: np.ndarray) -> np.ndarray:
        """tokens (rows,): each row's chosen token. Returns logits (rows, vocab) of the position after it."""
        live = [row.finish_reason is None for row in self.search.rows]
        if self.block is not None:
            i = self.served
            if all(not alive or (i < len(draft) and draft[i] == token)
                   for alive, draft, token in zip(live, self.drafts, tokens.tolist())):
                self.served += 1
                self.accepted += sum(live)
                return self.block[:, self.served]
            self.run.rollback(self.base + 1 + i)  # keep the block's first token and the drafts chosen
            self.block = None
        left = min((row.limit - len(row.ids) for row, alive in zip(self.search.rows, live) if alive), default=0)
        # the last token a row may get needs no draft after it, and no row drafts past its limit
        most = min(self.num_tokens, self.run.capacity - self.run.past_length - 1,
                   left - 1)
        self.drafts = [find_draft(history, most) if alive and most > 0 else []
                       for history, alive in zip(self.state.histories, live)]
        width = max(map(len, self.drafts), default=0)
        if width == 0:
            return self.run.advance(tokens)
        block = np.empty((len(tokens), 1 + width), np.int64)  # (rows, 1 + width)
        block[:, 0] = tokens
        for r, draft in enumerate(self.drafts):  # a shorter draft is filled up; filler is never served
            block[r, 1:] = (draft + draft[-1:] * width)[:width] if draft else tokens[r]
        self.drafted += sum(map(len, self.drafts))
        self.verifications += 1
        self.base, self.served = self.run.past_length, 0
        self.block = self.run.verify(block)
        return self.block[:, 0]

    def figures(self) -> dict:
        """Tokens drafted and kept, and the runs that verified drafts, for a generation's timings."""
        return {"draft_tokens": self.drafted, "accepted_draft_tokens": self.accepted,
                "draft_runs": self.verifications}


def lookup_run(run, search, state):
    """`run` wrapped in a `LookupRun` when the settings draft (prompt_lookup_num_tokens > 0), else `run`."""
    k = state.config.prompt_lookup_num_tokens
    return LookupRun(run, search, state, k) if k > 0 else run
