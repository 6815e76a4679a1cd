"""What one step of the generation loop does with the logits: sampled search or beam search.

`new_search` builds the search for a generation's settings; the loop (generator.py) only runs the
model and hands each step's logits to `search.step`, which returns the next token of every row
and, for beams, the row each one continues (the loop then reorders the KV cache).

- `SampleSearch` (sampling, and greedy at temperature 0): one token per row from the processed
  distribution; a row ends with "eos" (a stop token id), "stop" (a stop string, found in its
  decoded text) or "length" (max_new_tokens or the context). A constrained row also ends ("eos")
  when its grammar can take nothing more. Finished rows keep running until the whole batch is
  done, but what they sample is no longer recorded. With `logprobs`, each row also records the
  model's log-probability of every token it takes (the raw distribution, before the processors)
  and the `logprobs` most likely tokens there.
- `BeamSearch`: each prompt owns `num_beams` consecutive rows. At every step each beam's
  log-probabilities (after the processors that constrain what may be said: penalties, no-repeat
  n-grams, bias) are added to its running score, the best 2 * num_beams candidates of the prompt
  are ranked, and a candidate that ends becomes a finished hypothesis scored
  log-probability / length ** length_penalty. A prompt's search ends when it holds num_beams
  hypotheses that no running beam can beat any more, or at the length limit. Each beam's grammar
  matcher (constrained decoding) is copied with it; a beam whose grammar is complete can only
  take a stop token id next, so beam search with a constraint needs one (generator.py checks).

Both find stop strings with the same incremental `TextTracker` (stopping.py): a beam's tracker is
forked with it.

Example:
    >>> import edgellm
    >>> model = edgellm.load("shakespeare")
    >>> best = model.generate("ROMEO:", num_beams=4, max_new_tokens=12)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgellm.generation.sampling import Sampler, SamplingState, build_processors, log_softmax, process
from edgellm.generation.stopping import TextTracker
from edgellm.tokenizer import Tokenizer


def new_search(state: SamplingState, prompt_lengths: list[int], limits: list[int], tokenizer: Tokenizer,
               track_text: bool = False, logprobs: int | None = None):
    """The search for `state.config`: beams when num_beams > 1, else sampled rows.

    Args:
        state: the rows' sampling state (each prompt repeated num_beams or num_return_sequences times).
        prompt_lengths: for each prompt, its length in tokens.
        limits: for each row, the most new tokens it may get (max_new_tokens or the context).
        tokenizer: decodes the rows' text for stop strings.
        track_text: sampled rows keep their decoded text even without stop strings (streaming).
        logprobs: sampled rows record each token's log-probability and this many top alternatives.
    """
    config = state.config
    if config.num_beams > 1:
        return BeamSearch(state, prompt_lengths, limits[::config.num_beams], tokenizer)
    copies = config.num_return_sequences
    track = track_text or bool(config.stop_strings)
    rows = [Row(limit, TextTracker(tokenizer, config.stop_strings) if track else None) for limit in limits]
    return SampleSearch(state, rows, [r % copies for r in range(len(rows))], logprobs)


class Row:
    """One sampled sequence: its ids, limit, text and finish reason; with logprobs, for each id
    its log-probability and the top alternatives [(id, log-probability), ...], most likely first."""

    __slots__ = ("ids", "limit", "text", "finish_reason", "logprobs", "top")

    def __init__(self, limit: int, text: TextTracker | None):
        self.ids: list[int] = []
        self.limit, self.text, self.finish_reason = limit, text, None
        self.logprobs: list[float] = []
        self.top: list[list[tuple[int, float]]] = []


class SampleSearch:
    """The sampling (and greedy) step of the loop: choose, then finish rows that end."""

    def __init__(self, state: SamplingState, rows: list[Row], sequence_numbers: list[int],
                 logprobs: int | None = None):
        self.sampler = Sampler(state.config, sequence_numbers, state.constraints is not None)
        self.rows = rows
        self.stop_ids = set(state.config.stop_token_ids)
        self.live = len(rows)
        self.logprobs = logprobs
        self.constraints = state.constraints
        if self.constraints is not None:  # a grammar that only matches the empty text
            for i, row in enumerate(rows):
                if self.constraints.complete(i):
                    self._finish(i, row, "eos")

    @property
    def done(self) -> bool:
        return self.live == 0

    def step(self, logits: np.ndarray, state: SamplingState, tokens: np.ndarray | None = None
             ) -> tuple[np.ndarray, None]:
        """Choose each row's next token from logits (rows, vocab), or take `tokens` chosen already
        by this search's sampler for these logits (the server's batch chooses several searches'
        tokens in one call), and finish the rows that end."""
        log_probs = log_softmax(logits.astype(np.float64)) if self.logprobs is not None else None  # (rows, vocab)
        if tokens is None:
            tokens = self.sampler.choose(logits, state)
        ended = []
        for i, (row, token) in enumerate(zip(self.rows, tokens.tolist())):
            if row.finish_reason is not None:
                continue
            if token in self.stop_ids:
                ended.append((i, "eos"))
                continue
            row.ids.append(token)
            if log_probs is not None:
                self._record(row, log_probs[i], token)
            if row.text is not None and row.text.push(token):
                ended.append((i, "stop"))
            elif len(row.ids) >= row.limit:
                ended.append((i, "length"))
        for i, reason in ended:  # before the grammars take the tokens: an ended row's matcher goes
            self._finish(i, self.rows[i], reason)
        state.append(tokens)
        if self.constraints is not None:
            for i, row in enumerate(self.rows):
                if row.finish_reason is None and self.constraints.complete(i):
                    self._finish(i, row, "eos")
        return tokens, None

    def _finish(self, i: int, row: Row, reason: str) -> None:
        row.finish_reason = reason
        self.live -= 1
        if self.constraints is not None:
            self.constraints.release(i)

    def _record(self, row: Row, log_probs: np.ndarray, token: int) -> None:
        row.logprobs.append(float(log_probs[token]))
        n = self.logprobs
        if n:
            best = np.argpartition(-log_probs, n)[:n] if n < log_probs.size else np.arange(log_probs.size)
            best = best[np.argsort(-log_probs[best], kind="stable")]
            row.top.append([(int(t), float(log_probs[t])) for t in best])

    def text(self, row: Row, tokenizer: Tokenizer) -> str:
        """A finished row's text (cut before its stop string)."""
        return row.text.text if row.text is not None else tokenizer.decode(row.ids)


@dataclass
class Hypothesis:
    token_ids: list[int]
    finish_reason: str  # "eos", "stop" or "length"
    score: float  # log-probability / length ** length_penalty
    text: str | None = None  # the text cut before its stop string (None: decode token_ids)


class BeamSearch:
    """The beam step of the generation loop for `prompts` prompts of `limits` new tokens at most."""

    def __init__(self, state: SamplingState, prompt_lengths: list[int], limits: list[int],
                 tokenizer: Tokenizer | None = None):
        config = state.config
        self.beams, self.alpha = config.num_beams, config.length_penalty
        self.processors = build_processors(config, sampling=False, constrained=state.constraints is not None)
        self.prompt_lengths, self.limits = prompt_lengths, limits
        self.stop_ids = set(config.stop_token_ids)
        prompts = len(prompt_lengths)
        # each beam's text, forked with the beam, when there are stop strings to find
        self.texts = [TextTracker(tokenizer, config.stop_strings) for _ in range(prompts * self.beams)] \
            if config.stop_strings else None
        # a prompt's beams start identical: only the first may be extended at the first step
        self.scores = np.tile(np.r_[0.0, np.full(self.beams - 1, -np.inf)], prompts)  # (rows,)
        self.finished: list[list[Hypothesis]] = [[] for _ in range(prompts)]
        self.open = [True] * prompts
        self.pad = config.stop_token_ids[0] if config.stop_token_ids else 0

    @property
    def done(self) -> bool:
        return not any(self.open)

    def step(self, logits: np.ndarray, state: SamplingState) -> tuple[np.ndarray, np.ndarray]:
        """logits (rows, vocab) -> each row's next token and the row it continues (rows,), (rows,)."""
        rows, vocab = logits.shape
        log_probs = log_softmax(process(logits, state, self.processors))  # (rows, vocab)
        candidates = self.scores[:, None] + log_probs  # (rows, vocab)
        tokens = np.full(rows, self.pad, np.int64)
        parents = np.arange(rows)
        texts = list(self.texts) if self.texts is not None else None
        length = state.generated + 1  # new tokens of every beam after this step
        for p in range(len(self.open)):
            if not self.open[p]:
                continue
            first = p * self.beams
            block = candidates[first:first + self.beams].reshape(-1)  # (beams * vocab,)
            best = np.argpartition(-block, 2 * self.beams)[:2 * self.beams] if block.size > 2 * self.beams \
                else np.arange(block.size)
            best = best[np.argsort(-block[best], kind="stable")]
            kept: list[tuple[float, int, int, TextTracker | None]] = []
            for rank, index in enumerate(best.tolist()):
                beam, token, score = index // vocab, index % vocab, float(block[index])
                generated = state.histories[first + beam][self.prompt_lengths[p]:]
                text = None
                if token not in self.stop_ids and self.texts is not None:
                    text = self.texts[first + beam].fork()
                    text.push(token)
                if token in self.stop_ids:
                    if rank < self.beams and np.isfinite(score):
                        self._add(p, Hypothesis(generated, "eos", score / length ** self.alpha))
                elif text is not None and text.stopped:
                    if rank < self.beams and np.isfinite(score):
                        self._add(p, Hypothesis(generated + [token], "stop", score / length ** self.alpha, text.text))
                else:
                    kept.append((score, beam, token, text))
                if len(kept) == self.beams:
                    break
            while len(kept) < self.beams:  # a tiny vocabulary: fill with dead beams
                kept.append((-np.inf, 0, self.pad, None))
            for i, (score, beam, token, text) in enumerate(kept):
                self.scores[first + i], parents[first + i], tokens[first + i] = score, first + beam, token
                if texts is not None:
                    texts[first + i] = text or self.texts[first + beam]
            if length >= self.limits[p]:
                for score, beam, token, _ in kept:
                    history = state.histories[first + beam][self.prompt_lengths[p]:]
                    if np.isfinite(score):
                        self._add(p, Hypothesis(history + [token], "length", score / length ** self.alpha))
                self.open[p] = False
            elif len(self.finished[p]) >= self.beams:
                # no running beam can beat the worst kept hypothesis any more
                self.open[p] = kept[0][0] / length ** self.alpha > self.finished[p][-1].score
        self.texts = texts
        state.reorder(parents)
        state.append(tokens)
        return tokens, parents

    def _add(self, prompt: int, hypothesis: Hypothesis) -> None:
        kept = self.finished[prompt]
        kept.append(hypothesis)
        kept.sort(key=lambda h: -h.score)
        del kept[self.beams:]

    def results(self, prompt: int, count: int) -> list[Hypothesis]:
        """The `count` best hypotheses of a prompt, best first."""
        return self.finished[prompt][:count]
