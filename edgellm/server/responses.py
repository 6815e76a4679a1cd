"""OpenAI's response bodies: completions and chat completions, whole or as stream chunks, with
several choices (`n`) and log-probabilities. Plain Python: no HTTP stack, no model.

A `Choice` is what one generated sequence became: its text, edgellm's finish reason and, when
logprobs were asked for, one `Token` per token (its bytes, log-probability and top alternatives).
Completions give logprobs as OpenAI's legacy object (`tokens`, `token_logprobs`, `top_logprobs`,
`text_offset`), chat as `{"content": [{"token", "logprob", "bytes", "top_logprobs"}]}`. A token's
text is its UTF-8 text, or "bytes:\\xNN..." when it holds part of a character (OpenAI's form).

Example:
    >>> body = completion_body(False, "cmpl-1", "tiny", [Choice("Hi", "eos")], usage(2, 1))
    >>> body["choices"][0]["finish_reason"]
    'stop'
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length"}


@dataclass
class Token:
    raw: bytes  # the token's bytes
    logprob: float | None  # None: the first token of an echoed prompt (nothing predicts it)
    top: list[tuple[bytes, float]] | None = None  # the most likely tokens at its place, best first


@dataclass
class Choice:
    text: str
    finish_reason: str  # edgellm's: "eos", "stop" or "length"
    tokens: list[Token] | None = None  # None: logprobs were not asked for
    offset: int = 0  # completions' text_offset of the first token (chunks after the first)


def token_text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)


def new_id(chat: bool) -> str:
    return ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def logprobs_body(chat: bool, tokens: list[Token] | None, offset: int = 0) -> dict | None:
    if tokens is None:
        return None
    if chat:
        return {"content": [{"token": token_text(t.raw), "logprob": t.logprob, "bytes": list(t.raw),
                             "top_logprobs": [{"token": token_text(raw), "logprob": value, "bytes": list(raw)}
                                              for raw, value in t.top or ()]} for t in tokens],
                "refusal": None}
    offsets = []
    for t in tokens:
        offsets.append(offset)
        offset += len(t.raw.decode("utf-8", errors="replace"))
    return {"tokens": [token_text(t.raw) for t in tokens], "token_logprobs": [t.logprob for t in tokens],
            "top_logprobs": [None if t.top is None else {token_text(raw): value for raw, value in t.top}
                             for t in tokens],
            "text_offset": offsets}


def completion_body(chat: bool, id: str, model: str, choices: list[Choice], counts: dict) -> dict:
    out = []
    for index, c in enumerate(choices):
        reason = FINISH_REASONS[c.finish_reason]
        body = {"message": {"role": "assistant", "content": c.text}} if chat else {"text": c.text}
        out.append({"index": index, **body, "logprobs": logprobs_body(chat, c.tokens, c.offset),
                    "finish_reason": reason})
    return {"id": id, "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
            "model": model, "choices": out, "usage": counts}


def chunk_body(chat: bool, id: str, model: str, text: str | None, finish_reason: str | None = None,
               role: bool = False, index: int = 0, tokens: list[Token] | None = None, offset: int = 0) -> dict:
    """One stream chunk of choice `index`: a piece of text (and its tokens' logprobs), or (text
    None) the closing chunk with the finish reason."""
    reason = None if finish_reason is None else FINISH_REASONS[finish_reason]
    if chat:
        delta = {} if text is None else {"content": text}
        if role:
            delta["role"] = "assistant"
        choice = {"index": index, "delta": delta, "logprobs": logprobs_body(chat, tokens), "finish_reason": reason}
    else:
        choice = {"index": index, "text": text or "", "logprobs": logprobs_body(chat, tokens, offset),
                  "finish_reason": reason}
    return {"id": id, "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()), "model": model, "choices": [choice]}


def usage_chunk(chat: bool, id: str, model: str, counts: dict) -> dict:
    """The last chunk when stream_options.include_usage is set: no choices, the token counts."""
    return {"id": id, "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()), "model": model, "choices": [], "usage": counts}
