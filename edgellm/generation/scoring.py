"""How likely is a text under the model: per-token log-probabilities and perplexity.

A text longer than the context is scored with a sliding window: windows of `context` tokens
that start every `context // 2` tokens, each token scored once, in the first window that
scores it (so every token after the first window sees at least half a context of history).
Windows run through model.onnx in batches, without a cache (`score_windows`, which export also
uses for the perplexity of each weight variant on held-out windows).

Example:
    >>> import edgellm
    >>> model = edgellm.load("shakespeare")
    >>> result = model.score("ROMEO: What, ho!")
    >>> len(result.logprobs) == len(result.token_ids) - 1
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgellm.generation.sampling import log_softmax

WINDOWS_PER_RUN = 16


@dataclass
class ScoreResult:
    """token_ids: the text's ids. logprobs[i]: natural log-probability of token_ids[i + 1]
    given the tokens before it (the first token has no prediction). perplexity: exp of the
    mean negative log-probability."""

    token_ids: list[int]
    logprobs: list[float]

    @property
    def nll(self) -> float:
        """Total negative log-likelihood in nats."""
        return -float(np.sum(self.logprobs))

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll / len(self.logprobs))


def score_ids(model, ids: list[int], top: int = 0):
    """Log-probability of each of ids[1:] given the ids before it. With `top` > 0, also the `top`
    most likely [(id, log-probability), ...] at each of those positions (the server's logprobs):
    returns (logprobs, tops)."""
    context = model.config.context_length
    if len(ids) < 2:
        raise ValueError(f"Scoring needs a text of at least 2 tokens. Received: {len(ids)} token(s).")
    stride = max(1, context // 2)
    # (start, first position scored within the window): window i covers ids[start:start + context]
    windows = [(0, 1)]
    scored_to = min(context, len(ids))
    while scored_to < len(ids):
        start = min(scored_to - context + stride, len(ids) - context) if len(ids) > context else 0
        windows.append((start, scored_to - start))
        scored_to = min(start + context, len(ids))
    width = min(context, len(ids))  # every window is this wide: a shorter text is one window
    scored = score_windows(model, np.array([ids[s:s + width] for s, _ in windows], np.int64), top)
    picked = scored[0] if top else scored
    logprobs = [p for row, (_, first) in zip(picked, windows) for p in row[first - 1:].tolist()]
    assert len(logprobs) == len(ids) - 1
    if not top:
        return logprobs
    tops = [list(zip(i.tolist(), v.tolist())) for ids_, values, (_, first) in zip(scored[1], scored[2], windows)
            for i, v in zip(ids_[first - 1:], values[first - 1:])]
    return logprobs, tops


def score_windows(model, windows: np.ndarray, top: int = 0):
    """Log-probability of each token of each window given the tokens before it in that window.

    Args:
        model: a loaded `Generator` (its model.onnx runs without a cache).
        windows: int ids, (n, width) with 2 <= width <= context + 1; row r is scored on its own.
        top: also return the `top` most likely ids at each position and their log-probabilities.

    Returns:
        float64 (n, width - 1): [r, t] is log p(windows[r, t + 1] | windows[r, :t + 1]). With
        `top`, that and two (n, width - 1, top) arrays, ids and log-probabilities, most likely first.

    Example:
        >>> ids = np.array([model.tokenizer.encode("ROMEO: What, ho!")])
        >>> score_windows(model, ids).shape == (1, ids.shape[1] - 1)
        True
    """
    windows = np.asarray(windows, np.int64)
    width = windows.shape[1] - 1 if windows.ndim == 2 else 0  # positions run; the last token is a target only
    if not 1 <= width <= model.config.context_length:
        raise ValueError(f"windows must be (n, width) with 2 <= width <= context + 1 = "
                         f"{model.config.context_length + 1}. Received: shape {windows.shape}")
    picked = np.empty((len(windows), width), np.float64)
    top = min(top, model.config.vocab_size)
    top_ids, top_values = np.empty((len(windows), width, top), np.int64), np.empty((len(windows), width, top))
    for start in range(0, len(windows), WINDOWS_PER_RUN):
        batch = windows[start:start + WINDOWS_PER_RUN]  # (rows, width + 1)
        rows = batch.shape[0]
        inputs, targets = batch[:, :-1], batch[:, 1:]  # (rows, width) each
        logits, _ = model.forward(inputs, np.ones_like(inputs), np.tile(np.arange(width), (rows, 1)),
                                  model.empty_past(rows))
        log_probs = log_softmax(logits)  # (rows, width, vocab)
        picked[start:start + rows] = np.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
        if top:
            best = np.argsort(-log_probs, axis=-1, kind="stable")[..., :top]  # (rows, width, top)
            top_ids[start:start + rows] = best
            top_values[start:start + rows] = np.take_along_axis(log_probs, best, axis=-1)
    return (picked, top_ids, top_values) if top else picked


def score_text(model, text: str) -> ScoreResult:
    if not isinstance(text, str) or not text:
        raise ValueError("The text to score is empty. Pass a text of at least 2 tokens.")
    ids = model.tokenizer.encode(text)
    return ScoreResult(ids, score_ids(model, ids))
