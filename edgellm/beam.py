"""Beam search: keep the `num_beams` most likely continuations of each prompt.

Each prompt owns `num_beams` consecutive rows. At every step each beam's log-probabilities
(after the processors that constrain what may be said: penalties, no-repeat n-grams, bias) are
added to its running score, the best 2 * num_beams candidates of the prompt are ranked, and a
candidate that ends (a stop token id or a stop string) becomes a finished hypothesis scored
log-probability / length ** length_penalty. The search of a prompt ends when it holds
num_beams hypotheses that no running beam can beat any more, or at the length limit.

Example:
    >>> import edgellm
    >>> model = edgellm.load("shakespeare")
    >>> best = model.generate("ROMEO:", num_beams=4, max_new_tokens=12)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgellm.sampling import SamplingState, build_processors, log_softmax, process


@dataclass
class Hypothesis:
    token_ids: list[int]
    finish_reason: str  # "eos", "stop" or "length"
    score: float  # log-probability / length ** length_penalty


class BeamSearch:
    """The beam step of the generation loop for `prompts` prompts of `limits` new tokens at most.

    Args:
        state: the rows' sampling state (prompts * num_beams rows).
        prompt_lengths: for each prompt, its length in tokens.
        limits: for each prompt, the most new tokens it may get (max_new_tokens or the context).
        stop_text: for each row, a function of its generated ids -> True if the text holds a stop
            string (None when there are no stop strings).
    """

    def __init__(self, state: SamplingState, prompt_lengths: list[int], limits: list[int], stop_text=None):
        config = state.config
        self.beams, self.alpha = config.num_beams, config.length_penalty
        self.processors = build_processors(config, sampling=False)
        self.prompt_lengths, self.limits, self.stop_text = prompt_lengths, limits, stop_text
        self.stop_ids = set(config.stop_token_ids)
        prompts = len(prompt_lengths)
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
        length = state.generated + 1  # new tokens of every beam after this step
        for p in range(len(self.open)):
            if not self.open[p]:
                continue
            first = p * self.beams
            block = candidates[first:first + self.beams].reshape(-1)  # (beams * vocab,)
            best = np.argpartition(-block, 2 * self.beams)[:2 * self.beams] if block.size > 2 * self.beams \
                else np.arange(block.size)
            best = best[np.argsort(-block[best], kind="stable")]
            kept: list[tuple[float, int, int]] = []
            for rank, index in enumerate(best.tolist()):
                beam, token, score = index // vocab, index % vocab, float(block[index])
                generated = state.histories[first + beam][self.prompt_lengths[p]:]
                if token in self.stop_ids:
                    if rank < self.beams and np.isfinite(score):
                        self._add(p, Hypothesis(generated, "eos", score / length ** self.alpha))
                elif self.stop_text is not None and self.stop_text(generated + [token]):
                    if rank < self.beams and np.isfinite(score):
                        self._add(p, Hypothesis(generated + [token], "stop", score / length ** self.alpha))
                else:
                    kept.append((score, beam, token))
                if len(kept) == self.beams:
                    break
            while len(kept) < self.beams:  # a tiny vocabulary: fill with dead beams
                kept.append((-np.inf, 0, self.pad))
            for i, (score, beam, token) in enumerate(kept):
                self.scores[first + i], parents[first + i], tokens[first + i] = score, first + beam, token
            if length >= self.limits[p]:
                for i, (score, beam, token) in enumerate(kept):
                    history = state.histories[first + beam][self.prompt_lengths[p]:]
                    if np.isfinite(score):
                        self._add(p, Hypothesis(history + [token], "length", score / length ** self.alpha))
                self.open[p] = False
            elif len(self.finished[p]) >= self.beams:
                # no running beam can beat the worst kept hypothesis any more
                self.open[p] = kept[0][0] / length ** self.alpha > self.finished[p][-1].score
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
