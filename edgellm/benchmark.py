"""Speed of a loaded model: prefill time, decode tokens/s, time per token by position.

Used by `edgellm bench` and by the comparisons in bench/. Every figure is a median over
`repeats` runs, so one slow run on a busy machine does not decide it.

Example:
    >>> import edgellm
    >>> figures = decode_speed(edgellm.load("shakespeare"), new_tokens=32)
    >>> figures["decode_tokens_per_s"] > 0
    True
"""

from __future__ import annotations

import statistics
import time

import numpy as np

SAMPLE_TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
               "First Citizen:\nYou are all resolved rather to die than to famish?\n\n")


def prompt_of(model, tokens: int) -> list[int]:
    """A prompt of exactly `tokens` ids cut from real text."""
    ids = model.tokenizer.encode(SAMPLE_TEXT)
    while len(ids) < tokens:
        ids = ids + ids
    return ids[:tokens]


def decode_speed(model, prompt_tokens: int = 16, new_tokens: int = 64, batch: int = 1, repeats: int = 5) -> dict:
    """Greedy generation of `new_tokens` for `batch` prompts: prefill ms and decode tokens/s."""
    context = model.config.context_length
    _check_count("prompt_tokens", prompt_tokens, context - 1, f"below the context of {context}")
    for name, value in (("new_tokens", new_tokens), ("batch", batch), ("repeats", repeats)):
        _check_count(name, value)
    new_tokens = min(new_tokens, context - prompt_tokens)
    prompt = model.tokenizer.decode(prompt_of(model, prompt_tokens))
    runs = []
    for _ in range(repeats + 1):  # the first run warms up
        result = model.generate([prompt] * batch, temperature=0.0, max_new_tokens=new_tokens, stop_token_ids=(),
                                stop_strings=(), min_new_tokens=0, num_beams=1, num_return_sequences=1)
        runs.append(result[0].timings)
    runs = runs[1:]
    return {"batch": batch, "prompt_tokens": runs[0]["prompt_tokens"] // batch, "new_tokens": new_tokens,
            "prefill_ms": statistics.median(r["prefill_ms"] for r in runs),
            "decode_tokens_per_s": statistics.median(r["decode_tokens_per_s"] for r in runs)}


def time_per_token(model, position: int, steps: int = 16, repeats: int = 5, settle: int = 16) -> float:
    """Milliseconds of one decode step (batch 1) when `position` tokens are already cached.

    The cache is filled by a prompt and then `settle` untimed steps (fewer when the position is
    small): a prompt's run pushes the weights out of the processor's caches, and the steps right
    after it are slower until they are back (docs/runtime.md), a cost of the prompt, not of the
    position."""
    context = model.config.context_length
    _check_count("repeats", repeats)
    if type(position) is not int or not 1 <= position <= context - steps:
        raise ValueError(f"position must be in [1, {context - steps}] for a context of {context}. "
                         f"Received: position={position}")
    settle = min(settle, position - 1)
    ids = np.array([prompt_of(model, position)], np.int64)
    prompt = ids[:, :position - settle]
    times = []
    for _ in range(repeats + 1):
        run = model.session.new_run(1, position + steps)
        run.start(prompt, np.ones_like(prompt), np.arange(prompt.shape[1], dtype=np.int64)[None])
        for token in ids[0, prompt.shape[1]:]:
            run.advance(np.array([token], np.int64))
        token = np.array([int(ids[0, -1])], np.int64)
        started = time.perf_counter()
        for _ in range(steps):
            token[0] = int(run.advance(token)[0].argmax())
        times.append(1000 * (time.perf_counter() - started) / steps)
    return statistics.median(times[1:])


def _check_count(name: str, value, most: int | None = None, why: str = "") -> None:
    if type(value) is not int or value < 1 or (most is not None and value > most):
        rule = f"in [1, {most}] ({why})" if most is not None else "a positive integer"
        raise ValueError(f"{name} must be {rule}. Received: {name}={value!r}")
