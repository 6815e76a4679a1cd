"""Choosing the next token from logits: settings, logits processors, and the sampler. Pure numpy.

Processors are functions `(logits, state) -> logits` over one row of logits (vocab,), applied
in this fixed order: repetition penalty, temperature, top-k, top-p, min-p. Temperature 0 is
greedy (argmax); there is no separate greedy loop.

Example:
    >>> cfg = GenerationConfig(temperature=0.0)
    >>> int(next_token(np.array([0.1, 2.0, 0.3]), SamplingState(cfg, []), np.random.default_rng(0)))
    1
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class GenerationConfig:
    """Generation settings, checked when built.

    Args:
        max_new_tokens: tokens to generate at most (>= 1).
        temperature: 0 for greedy; higher is more random.
        top_k: keep the k most likely tokens (0 = off).
        top_p: keep the smallest set of tokens whose probability adds up to top_p (1 = off).
        min_p: drop tokens less likely than min_p times the most likely one (0 = off).
        repetition_penalty: divide the logits of tokens already seen (1 = off; CTRL's penalty).
        seed: seed of the sampler; the same seed gives the same text.
        stop_token_ids: generation ends after any of these ids (the end-of-text id by default).
    """

    max_new_tokens: int = 128
    temperature: float = 0.8
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop_token_ids: tuple[int, ...] = field(default_factory=tuple)

    def __post_init__(self):
        checks = [
            ("max_new_tokens", self.max_new_tokens >= 1, "must be at least 1"),
            ("temperature", self.temperature >= 0, "must be >= 0"),
            ("top_k", self.top_k >= 0, "must be >= 0"),
            ("top_p", 0 < self.top_p <= 1, "must be in (0, 1]"),
            ("min_p", 0 <= self.min_p < 1, "must be in [0, 1)"),
            ("repetition_penalty", self.repetition_penalty > 0, "must be > 0"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"{name} {rule}. Received: {name}={getattr(self, name)}")
        object.__setattr__(self, "stop_token_ids", tuple(int(i) for i in self.stop_token_ids))

    def replace(self, **changes) -> "GenerationConfig":
        """A copy with `changes` applied; unknown names raise a clear error."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"Unknown generation setting {unknown[0]!r}. Allowed: {sorted(known)}")
        return dataclasses.replace(self, **changes)


@dataclass
class SamplingState:
    config: GenerationConfig
    token_ids: list[int]  # prompt and generated ids so far


def repetition_penalty(logits: np.ndarray, state: SamplingState) -> np.ndarray:
    penalty = state.config.repetition_penalty
    if penalty == 1.0 or not state.token_ids:
        return logits
    seen = np.unique(np.asarray(state.token_ids))
    logits = logits.copy()
    # dividing a negative logit would raise it, so negatives are multiplied instead
    logits[seen] = np.where(logits[seen] > 0, logits[seen] / penalty, logits[seen] * penalty)
    return logits


def temperature(logits: np.ndarray, state: SamplingState) -> np.ndarray:
    t = state.config.temperature
    return logits if t in (0.0, 1.0) else logits / t


def top_k(logits: np.ndarray, state: SamplingState) -> np.ndarray:
    k = state.config.top_k
    if k == 0 or k >= logits.shape[-1]:
        return logits
    kth = np.partition(logits, -k)[-k]
    return np.where(logits < kth, -np.inf, logits)


def top_p(logits: np.ndarray, state: SamplingState) -> np.ndarray:
    p = state.config.top_p
    if p >= 1.0:
        return logits
    order = np.argsort(-logits, kind="stable")
    probs = _softmax(logits[order])
    # keep tokens until the mass before them reaches p; the most likely token always stays
    keep_sorted = np.cumsum(probs) - probs < p
    keep = np.zeros_like(keep_sorted)
    keep[order] = keep_sorted
    return np.where(keep, logits, -np.inf)


def min_p(logits: np.ndarray, state: SamplingState) -> np.ndarray:
    m = state.config.min_p
    if m == 0.0:
        return logits
    probs = _softmax(logits)
    return np.where(probs < m * probs.max(), -np.inf, logits)


PROCESSORS = (repetition_penalty, temperature, top_k, top_p, min_p)


def next_token(logits: np.ndarray, state: SamplingState, rng: np.random.Generator) -> int:
    """Apply the processors to one row of logits (vocab,) and pick a token id."""
    logits = logits.astype(np.float64)
    for process in PROCESSORS:
        logits = process(logits, state)
    if state.config.temperature == 0.0:
        return int(np.argmax(logits))
    return int(rng.choice(logits.shape[-1], p=_softmax(logits)))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - np.max(x))
    return e / e.sum()
