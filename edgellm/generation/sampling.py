"""Choosing the next token from logits: logits processors and the sampler. Pure numpy.

A processor is a function `(logits, state) -> logits` over a block of rows, logits of shape
(rows, vocab) float64, one row per sequence being generated. The enabled ones run in this fixed
order (`PROCESSORS`):

    repetition_penalty, presence/frequency penalty, no_repeat_ngram, logit_bias, min_new_tokens,
    constraint, temperature, top_k, top_p, typical_p, min_p

The first six shape what may be said (they also apply to beam search); the last five shape
how randomly it is said (sampling only). Temperature 0 is greedy: the argmax, no other loop.
`constraint` is the token mask of constrained decoding (constraints.py): on when the rows carry
a grammar, it bans every token the grammar cannot take next. A row whose every token ends up
banned (say, by no_repeat_ngram and logit_bias together) falls back to its unprocessed logits
under the grammar's mask alone (the grammar always wins), so a step always yields a token.

Example:
    >>> state = SamplingState(GenerationConfig(temperature=0.0), [[5, 1]], vocab_size=3)
    >>> Sampler(state.config, [0]).choose(np.array([[0.1, 2.0, 0.3]]), state).tolist()
    [1]
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgellm.folder.generation_config import GenerationConfig

__all__ = ["GenerationConfig", "PROCESSORS", "Sampler", "SamplingState", "build_processors", "pick", "process"]


class SamplingState:
    """What the processors read about each row: its ids so far, counts, n-grams.

    Args:
        config: the settings.
        histories: for each row, the prompt ids (the row's ids grow as tokens are appended).
        vocab_size: the model's vocabulary size.
        constraints: the rows' grammar matchers (`constraints.RowMatchers`), or None.
    """

    def __init__(self, config: GenerationConfig, histories: list[list[int]], vocab_size: int, constraints=None):
        self.config = config
        self.constraints = constraints
        self.mask = None  # (rows, vocab) bool: what the grammars allow at this step (the constraint processor)
        self.vocab_size = vocab_size
        self.histories = [list(h) for h in histories]
        self.generated = 0  # tokens appended to every row so far
        rows = len(self.histories)
        # bookkeeping is kept only for the processors that are on
        self.seen = self.counts = self.ngrams = None
        if config.repetition_penalty != 1.0:
            self.seen = np.zeros((rows, vocab_size), bool)  # (rows, vocab): in the prompt or output
            for row, ids in enumerate(self.histories):
                self.seen[row, ids] = True
        if config.presence_penalty or config.frequency_penalty:
            self.counts = np.zeros((rows, vocab_size), np.float64)  # (rows, vocab): generated only
        if config.no_repeat_ngram_size:
            n = config.no_repeat_ngram_size
            self.ngrams = [{} for _ in range(rows)]  # per row: (n-1)-gram -> ids that followed it
            for row, ids in enumerate(self.histories):
                for end in range(n, len(ids) + 1):
                    self.ngrams[row].setdefault(tuple(ids[end - n:end - 1]), set()).add(ids[end - 1])
        bias = config.logit_bias
        self.bias = None
        if bias:
            self.bias = np.zeros(vocab_size)
            self.bias[list(bias)] = list(bias.values())
        self.stop_ids = np.array(config.stop_token_ids, np.int64)

    def append(self, tokens: np.ndarray) -> None:
        """Record one new token per row: tokens (rows,)."""
        for history, token in zip(self.histories, tokens.tolist()):
            history.append(token)
        self.generated += 1
        if self.constraints is not None:
            self.constraints.advance(tokens)
        if self.seen is None and self.counts is None and self.ngrams is None:
            return
        rows = np.arange(len(tokens))
        if self.seen is not None:
            self.seen[rows, tokens] = True
        if self.counts is not None:
            self.counts[rows, tokens] += 1
        if self.ngrams is not None:
            n = self.config.no_repeat_ngram_size
            for ngrams, ids in zip(self.ngrams, self.histories):
                if len(ids) >= n:
                    ngrams.setdefault(tuple(ids[len(ids) - n:-1]), set()).add(ids[-1])

    def reorder(self, parents: np.ndarray) -> None:
        """Rows continue from `parents` (rows,): beam search keeps the best continuations."""
        plist = parents.tolist()
        if self.constraints is not None:
            self.constraints.reorder(parents)
        self.histories = [list(self.histories[p]) for p in plist]
        if self.seen is not None:
            self.seen = self.seen[parents]
        if self.counts is not None:
            self.counts = self.counts[parents]
        if self.ngrams is not None:
            self.ngrams = [{k: set(v) for k, v in self.ngrams[p].items()} for p in plist]


# ---- processors: (logits (rows, vocab), state) -> logits ---------------------------------------

def logit_bias(logits: np.ndarray, state: SamplingState) -> np.ndarray:
    return logits + state.bias


def repetition_penalty(logits: np.ndarray, state: SamplingState) -> np.ndarray:
    # CTRL's penalty: dividing a negative logit would raise it, so negatives are multiplied
    p = state.config.repetition_penalty
    return np.where(state.seen, np.where(logits > 0, logits / p, logits * p), logits)


def presence_frequency_penalty(logits: np.ndarray, state: SamplingState) -> np.ndarray:
    c = state.config
    return logits - c.frequency_penalty * state.counts - c.presence_penalty * (state.counts > 0)


def no_repeat_ngram(logits: np.ndarray, state: SamplingState) -> np.ndarray:
    n = state.config.no_repeat_ngram_size
    for row, (ngrams, ids) in enumerate(zip(state.ngrams, state.histories)):
        banned = ngrams.get(tuple(ids[len(ids) - n + 1:])) if len(ids) >= n - 1 else None
        if banned:
            logits[row, list(banned)] = -np.inf
    return logits


def min_new_tokens(logits: np.ndarray, state: SamplingState) -> np.ndarray:
    if state.generated < state.config.min_new_tokens and state.stop_ids.size:
        logits[:, state.stop_ids] = -np.inf
    return logits


def constraint(logits: np.ndarray, state: SamplingState) -> np.ndarray:
    state.mask = state.constraints.allowed()
    return np.where(state.mask, logits, -np.inf)


def temperature(logits: np.ndarray, state: SamplingState) -> np.ndarray:
    return logits / state.config.temperature


def top_k(logits: np.ndarray, state: SamplingState) -> np.ndarray:
    k = state.config.top_k
    if k >= logits.shape[-1]:
        return logits
    kth = np.partition(logits, -k, axis=-1)[:, -k:-k + 1 or None]  # (rows, 1); ties with it stay
    return np.where(logits < kth, -np.inf, logits)


def _keep_up_to_mass(logits: np.ndarray, probs: np.ndarray, order: np.ndarray, mass: float) -> np.ndarray:
    """Keep tokens in `order` until the probability before them reaches `mass`; the first always stays."""
    sorted_probs = np.take_along_axis(probs, order, -1)
    keep_sorted = np.cumsum(sorted_probs, -1) - sorted_probs < mass
    keep = np.empty_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, -1)
    return np.where(keep, logits, -np.inf)


def top_p(logits: np.ndarray, state: SamplingState) -> np.ndarray:
    # only the tokens still allowed are ranked: after top_k, k of them rather than the vocabulary
    rows, allowed, values = _allowed(logits)
    order = np.argsort(-values, axis=-1, kind="stable")  # ties keep vocabulary order
    sorted_probs = _softmax(values)[rows, order]
    keep = np.cumsum(sorted_probs, -1) - sorted_probs < state.config.top_p  # the first always stays
    out = np.full_like(logits, -np.inf)
    row, rank = np.nonzero(keep)
    kept = allowed[row, order[row, rank]]
    out[row, kept] = logits[row, kept]
    return out


def typical_p(logits: np.ndarray, state: SamplingState) -> np.ndarray:
    # Meister et al. 2022: rank tokens by |surprise - entropy|, keep them up to mass typical_p
    log_probs = log_softmax(logits)
    probs = np.exp(log_probs)
    entropy = -(probs * np.where(probs > 0, log_probs, 0.0)).sum(-1, keepdims=True)
    order = np.argsort(np.abs(-log_probs - entropy), axis=-1, kind="stable")
    return _keep_up_to_mass(logits, probs, order, state.config.typical_p)


def min_p(logits: np.ndarray, state: SamplingState) -> np.ndarray:
    probs = _softmax(logits)
    return np.where(probs < state.config.min_p * probs.max(-1, keepdims=True), -np.inf, logits)


Processor = Callable[[np.ndarray, SamplingState], np.ndarray]

# the processors that read nothing but the settings (no row's history): rows of different
# generations with equal settings can run them together (`Sampler.shared_key`)
SETTINGS_ONLY = frozenset({"temperature", "top_k", "top_p", "typical_p", "min_p"})

# (processor, is it on for these settings (and are the rows constrained)?, does it shape what may
# be said, not how randomly)
PROCESSORS: tuple[tuple[Processor, Callable[[GenerationConfig, bool], bool], bool], ...] = (
    (repetition_penalty, lambda c, _: c.repetition_penalty != 1.0, True),
    (presence_frequency_penalty, lambda c, _: bool(c.presence_penalty or c.frequency_penalty), True),
    (no_repeat_ngram, lambda c, _: c.no_repeat_ngram_size > 0, True),
    (logit_bias, lambda c, _: bool(c.logit_bias), True),
    (min_new_tokens, lambda c, _: c.min_new_tokens > 0, True),
    (constraint, lambda _, constrained: constrained, True),
    (temperature, lambda c, _: c.temperature not in (0.0, 1.0), False),
    (top_k, lambda c, _: c.top_k > 0, False),
    (top_p, lambda c, _: c.top_p < 1.0, False),
    (typical_p, lambda c, _: c.typical_p < 1.0, False),
    (min_p, lambda c, _: c.min_p > 0.0, False),
)


def build_processors(config: GenerationConfig, sampling: bool | None = None,
                     constrained: bool = False) -> list[Processor]:
    """The processors that are on for `config`, in order (`constraint` when the rows carry a
    grammar). Greedy and beam search skip the sampling ones (temperature to min_p): they cannot
    change an argmax or a beam's ranking in a way those modes use."""
    sampling = config.temperature > 0 and config.num_beams == 1 if sampling is None else sampling
    return [p for p, on, constrains in PROCESSORS if on(config, constrained) and (constrains or sampling)]


def process(logits: np.ndarray, state: SamplingState, processors: list[Processor]) -> np.ndarray:
    """Run `processors` over logits (rows, vocab); rows left with no allowed token fall back
    to their unprocessed logits, under the grammar's mask when there is one."""
    out = logits.astype(np.float64)
    for processor in processors:
        out = processor(out, state)
    if processors:
        dead = ~np.isfinite(out.max(-1))  # (rows,): every token banned, or NaN
        if dead.any():
            out[dead] = logits[dead]
            if constraint in processors:
                masked = np.where(state.mask[dead], logits[dead], -np.inf)
                keep = np.isfinite(masked.max(-1))  # a row the grammar leaves nothing (a dead beam) stays raw
                out[np.flatnonzero(dead)[keep]] = masked[keep]
    return out


class Sampler:
    """Picks one token per row: argmax at temperature 0, else a draw from the processed
    distribution with one `numpy.random.Generator` per row seeded from (seed, row's sequence
    number within its prompt), so a prompt's text depends on the seed only, not on the batch.

    Args:
        config: the settings.
        sequence_numbers: for each row, which of its prompt's return sequences it is.
        constrained: the rows carry grammars (the `constraint` processor is on).
    """

    def __init__(self, config: GenerationConfig, sequence_numbers: list[int], constrained: bool = False):
        self.config = config
        self.processors = build_processors(config, constrained=constrained)
        seed = config.seed if config.seed is not None else int(np.random.SeedSequence().entropy % (1 << 63))
        self.rngs = [np.random.default_rng([seed, n]) for n in sequence_numbers]
        self.shared_key = self._shared_key()

    def choose(self, logits: np.ndarray, state: SamplingState, draws: np.ndarray | None = None) -> np.ndarray:
        """logits (rows, vocab) -> token ids (rows,) int64. `draws`: each row's uniform draw, when
        the rows are several samplers' with equal `shared_key` (default: this sampler's own)."""
        processed = process(logits, state, self.processors) if self.processors else logits
        return pick(processed, self.draws() if draws is None else draws)

    def draws(self) -> np.ndarray | None:
        """This step's uniform draw of each row from the row's own generator (None when greedy)."""
        return None if self.config.temperature == 0.0 else np.array([rng.random() for rng in self.rngs])

    def _shared_key(self) -> tuple | None:
        """`shared_key`: samplers with equal keys process logits alike, reading nothing but their
        settings, so the rows of several generations can be processed in one call and `pick`ed
        with each row's own draws (the server's batch does). None when a processor reads the rows'
        own state (penalties, bias, n-grams, min_new_tokens, a grammar)."""
        if any(p.__name__ not in SETTINGS_ONLY for p in self.processors):
            return None
        c = self.config  # the processors follow from these settings (build_processors)
        return (0.0,) if c.temperature == 0.0 else (c.temperature, c.top_k, c.top_p, c.typical_p, c.min_p)


def pick(processed: np.ndarray, draws: np.ndarray | None) -> np.ndarray:
    """The token of each row: the argmax without draws (greedy), else the first allowed token
    whose cumulative probability passes the row's draw in [0, 1) (banned tokens carry none;
    rounding can put a draw past the end: then the row's last allowed token). (rows,) int64."""
    if draws is None:
        return processed.argmax(-1)
    rows, allowed, values = _allowed(processed)
    cumulative = np.cumsum(np.exp(values - values.max(-1, keepdims=True)), -1)  # (rows, allowed)
    passed = cumulative > (draws * cumulative[:, -1])[:, None]
    picked = passed.argmax(-1)
    if not passed[:, -1].all():  # a draw past the end
        last = values.shape[-1] - 1 - np.isfinite(values[:, ::-1]).argmax(-1)
        picked = np.where(passed[:, -1], picked, last)
    return allowed[rows[:, 0], picked].astype(np.int64)


def _allowed(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's allowed (finite) tokens in vocabulary order, and their logits: (rows, 1) row
    numbers, then (rows, m) ids and logits, m the most any row allows (a row allowing fewer is
    filled with banned ones, at -inf). After top_k that is k tokens, not the vocabulary."""
    finite = np.isfinite(logits)
    if len(logits) == 1:
        allowed = np.flatnonzero(finite[0])[None]
    else:
        most = int(finite.sum(-1).max())
        if most == logits.shape[-1]:
            allowed = np.broadcast_to(np.arange(most), logits.shape)
        else:
            allowed = np.sort(np.argpartition(np.where(finite, -logits, np.inf), most - 1, axis=-1)[:, :most], -1)
    rows = np.arange(len(logits))[:, None]
    return rows, allowed, logits[rows, allowed]


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def log_softmax(x: np.ndarray) -> np.ndarray:
    """Log-probabilities over the last axis, computed stably."""
    shifted = x - x.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
