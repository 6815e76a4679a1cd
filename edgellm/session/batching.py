"""Several prompts in one run: left padding, the attention mask and position ids.

Prompts of different lengths are padded on the left so that every row's last token sits in the
last column and all rows decode in step:

    ids   [[pad, pad, 11, 12],      mask [[0, 0, 1, 1],      positions [[0, 0, 0, 1],
           [ 21,  22, 23, 24]]            [1, 1, 1, 1]]                 [0, 1, 2, 3]]

position_ids = cumsum(mask) - 1, clipped at 0, so each row's positions start at 0 as they would
alone; padded keys are masked out, so each row computes what it would compute alone.

Example:
    >>> batch = pad_left([[11, 12], [21, 22, 23, 24]], pad_id=0)
    >>> batch.positions.tolist()
    [[0, 0, 0, 1], [0, 1, 2, 3]]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class PromptTooLong(ValueError):
    """A prompt that leaves no room in the context for a new token (truncate="error"). Its
    message names the library's argument; `explain` lets the CLI name its option instead."""

    def __init__(self, tokens: int, context: int):
        self.tokens, self.context = tokens, context
        super().__init__(self.explain("truncate='error'", "truncate='left'"))

    def explain(self, received: str, remedy: str) -> str:
        return (f"The prompt is {self.tokens} tokens but the model's context is {self.context} tokens (room for "
                f"one new token at least). Received: {received}. Shorten the prompt or pass {remedy} to drop "
                "its start.")


@dataclass
class PaddedBatch:
    ids: np.ndarray  # (rows, width) int64, left padded
    mask: np.ndarray  # (rows, width) int64, 1 for prompt tokens
    positions: np.ndarray  # (rows, width) int64
    lengths: list[int]  # prompt tokens per row


def pad_left(prompts: list[list[int]], pad_id: int) -> PaddedBatch:
    width = max(len(p) for p in prompts)
    ids = np.full((len(prompts), width), pad_id, np.int64)
    mask = np.zeros((len(prompts), width), np.int64)
    for row, prompt in enumerate(prompts):
        if prompt:
            ids[row, width - len(prompt):] = prompt
            mask[row, width - len(prompt):] = 1
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    return PaddedBatch(ids, mask, positions, [len(p) for p in prompts])


def fit_context(prompt: list[int], context: int, max_new_tokens: int, policy: str, tail: int = 0) -> list[int]:
    """Apply the truncate policy to a prompt of token ids for a model of `context` tokens.

    A prompt must leave room for at least one new token. Policies "left" and "right" cut a
    prompt longer than `keep` = context - min(max_new_tokens, context // 2) tokens (room for
    max_new_tokens, but at least half the context for the prompt): "left" drops its oldest
    tokens, "right" its end, keeping its first tokens and its last `tail` ones (a template's
    closing marker, such as a task model's <|completion|>). Training cuts task examples with
    the same function ("right", the completion's length as max_new_tokens).

    Example:
        >>> fit_context([1, 2, 3, 4, 5, 9], context=8, max_new_tokens=4, policy="right", tail=1)
        [1, 2, 3, 9]
    """
    if not prompt:
        raise ValueError("The prompt is empty. Pass some text to continue.")
    keep = context - min(max_new_tokens, context // 2)
    if policy == "left":
        return prompt[-keep:] if len(prompt) > keep else prompt
    if policy == "right":
        return prompt[: keep - tail] + prompt[len(prompt) - tail:] if len(prompt) > keep else prompt
    if len(prompt) >= context:
        raise PromptTooLong(len(prompt), context)
    return prompt
