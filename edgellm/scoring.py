"""How likely is a text under the model: per-token log-probabilities and perplexity.

A text longer than the context is scored with a sliding window: windows of `context` tokens
that start every `context // 2` tokens, each token scored once, in the first window that
scores it (so every token after the first window sees at least half a context of history).
Windows run through model.onnx in batches, without a cache.

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

from edgellm.sampling import log_softmax

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


def score_ids(model, ids: list[int]) -> list[float]:
    """Log-probability of each of ids[1:] given the ids before it."""
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
    logprobs: list[float] = []
    full = [w for w in windows if w[0] + context <= len(ids)]
    short = [w for w in windows if w[0] + context > len(ids)]  # only when the text is shorter than the context
    for group in [full[i:i + WINDOWS_PER_RUN] for i in range(0, len(full), WINDOWS_PER_RUN)] + [[w] for w in short]:
        width = min(context, len(ids) - group[0][0])
        batch = np.array([ids[s:s + width] for s, _ in group], np.int64)  # (windows, width)
        rows = batch.shape[0]
        logits, _ = model.forward(batch, np.ones_like(batch), np.tile(np.arange(width), (rows, 1)),
                                  model.empty_past(rows))
        log_probs = log_softmax(logits)  # (windows, width, vocab)
        for row, (start, first) in enumerate(group):
            targets = batch[row, first:]  # tokens predicted from position first - 1 on
            picked = log_probs[row, np.arange(first - 1, width - 1), targets]
            logprobs.extend(picked.astype(np.float64).tolist())
    assert len(logprobs) == len(ids) - 1
    return logprobs


def score_text(model, text: str) -> ScoreResult:
    if not isinstance(text, str) or not text:
        raise ValueError("The text to score is empty. Pass a text of at least 2 tokens.")
    ids = model.tokenizer.encode(text)
    return ScoreResult(ids, score_ids(model, ids))
