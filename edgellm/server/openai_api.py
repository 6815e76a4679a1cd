"""OpenAI's completion and chat formats: checking request bodies, the chat template, stop strings,
and the response and stream-chunk bodies. Plain Python: no HTTP stack, no model.

The server (`app.py`) turns a request body into a `Request` with `parse_completion` or
`parse_chat`, runs it, and answers with `completion_body` or the `*_chunk` bodies.

Example:
    >>> request = parse_completion({"prompt": "ROMEO:", "max_tokens": 8, "temperature": 0})
    >>> request.prompt, request.settings
    ('ROMEO:', {'max_new_tokens': 8, 'temperature': 0})
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

# OpenAI name -> edgellm GenerationConfig name. top_k, min_p and repetition_penalty are not
# OpenAI's but vLLM and llama.cpp accept them too; the openai client sends them with extra_body.
SETTINGS = {"max_tokens": "max_new_tokens", "max_completion_tokens": "max_new_tokens",
            "temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
            "repetition_penalty": "repetition_penalty", "seed": "seed"}
INTEGERS = {"max_tokens", "max_completion_tokens", "top_k", "seed"}
# Accepted only at the value that means "off"; anything else is refused rather than ignored.
UNSUPPORTED = {"frequency_penalty": (0, 0.0), "presence_penalty": (0, 0.0), "best_of": (1,),
               "echo": (False,), "logprobs": (False, 0), "top_logprobs": (0,), "suffix": ("",),
               "logit_bias": ({},), "tools": ([],), "functions": ([],)}
MAX_STOPS = 4

# The chat template: one "Role: content" line per message, then "Assistant:" for the model to
# continue. The reply ends at the model's end-of-text token, at a stop string, or where the model
# starts a new "User:" or "System:" line.
CHAT_ROLES = {"system": "System", "developer": "System", "user": "User", "assistant": "Assistant"}
CHAT_STOPS = ("\nUser:", "\nSystem:")


class RequestError(ValueError):
    """A request the server refuses, with OpenAI's error fields."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None, status: int = 400,
                 type: str = "invalid_request_error"):
        super().__init__(message)
        self.param, self.code, self.status, self.type = param, code, status, type

    def body(self) -> dict:
        return error_body(str(self), self.type, self.param, self.code)


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


@dataclass
class Request:
    prompt: str  # the text the model continues (for chat: the rendered template)
    settings: dict  # GenerationConfig overrides
    stop: tuple[str, ...] = ()
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage: a last chunk with token counts
    model: str | None = None
    names: dict = field(default_factory=dict)  # GenerationConfig name -> the OpenAI name received


def parse_completion(body: dict) -> Request:
    """Check a /v1/completions body; `prompt` is a string or a list of one string."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise RequestError(f"prompt must be a string or a list of one string. Received: prompt={_short(prompt)}. "
                           "Send one prompt per request.", "prompt")
    return _parse_common(body, prompt, ())


def parse_chat(body: dict, task_model: bool = False) -> Request:
    """Check a /v1/chat/completions body and render its messages with the chat template.

    A task model (translation, question answering) has no conversation layout: it answers one
    user message, which the generator wraps in the task template as it does a completion prompt.
    Anything else (a system message, earlier turns) is refused rather than dropped.
    """
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(f"messages must be a non-empty list of {{role, content}} objects. "
                           f"Received: messages={_short(messages)}", "messages")
    if task_model:
        return _parse_common(body, task_message(messages), ())
    return _parse_common(body, render_chat(messages), CHAT_STOPS)


def task_message(messages: list) -> str:
    """The one user message a task model answers (its prompt, before the task template)."""
    roles = [m.get("role") if isinstance(m, dict) else None for m in messages]
    if roles != ["user"]:
        raise RequestError("This is a task model: it answers one user message, in its task template. "
                           f"Received: messages with roles {_short(roles)}. Send one message with role "
                           '"user", or send the prompt to /v1/completions.', "messages")
    return _content_text(messages[0].get("content"), 0)


def render_chat(messages: list) -> str:
    """The chat template: "System: ...\\nUser: ...\\nAssistant:" (see CHAT_ROLES).

    Example:
        >>> render_chat([{"role": "user", "content": "Hello"}])
        'User: Hello\\nAssistant:'
    """
    lines = []
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in CHAT_ROLES:
            raise RequestError(f"messages[{i}].role must be one of {sorted(CHAT_ROLES)}. Received: {_short(role)}",
                               f"messages[{i}].role")
        lines.append(f"{CHAT_ROLES[role]}: {_content_text(message.get('content'), i)}")
    return "\n".join(lines) + "\nAssistant:"


def _content_text(content, i: int) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                         and isinstance(p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    raise RequestError(f"messages[{i}].content must be a string or a list of text parts. "
                       f"Received: {_short(content)}", f"messages[{i}].content")


def _parse_common(body: dict, prompt: str, default_stops: tuple[str, ...]) -> Request:
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise RequestError(f"model must be a string. Received: model={_short(model)}", "model")
    if body.get("n", 1) != 1:
        raise RequestError(f"n must be 1: this server returns one choice per request. Received: n={_short(body['n'])}. "
                           "Send several requests instead.", "n")
    for name, off in UNSUPPORTED.items():
        if body.get(name) is not None and body[name] not in off:
            raise RequestError(f"{name} is not supported by this server. Received: {name}={_short(body[name])}. "
                               "Leave it out.", name)
    settings, names = {}, {}
    for name, setting in SETTINGS.items():
        value = body.get(name)
        if value is None:
            continue
        integer = name in INTEGERS
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
            raise RequestError(f"{name} must be {'an integer' if integer else 'a number'}. "
                               f"Received: {name}={_short(value)}", name)
        if name == "seed" and value < 0:
            raise RequestError(f"seed must be >= 0. Received: seed={value}", name)
        settings[setting], names[setting] = value, name
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError(f"stream must be true or false. Received: stream={_short(stream)}", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise RequestError(f"stream_options must be an object. Received: {_short(options)}", "stream_options")
    return Request(prompt, settings, _parse_stop(body.get("stop")) + default_stops, stream,
                   bool(options.get("include_usage", False)), model, names)


def _parse_stop(stop) -> tuple[str, ...]:
    stops = [stop] if isinstance(stop, str) else stop if stop is not None else []
    if (not isinstance(stops, list) or len(stops) > MAX_STOPS
            or not all(isinstance(s, str) and s for s in stops)):
        raise RequestError(f"stop must be a non-empty string or a list of at most {MAX_STOPS} of them. "
                           f"Received: stop={_short(stop)}", "stop")
    return tuple(stops)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ---- response bodies ------------------------------------------------------------------------

FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length"}


def new_id(chat: bool) -> str:
    return ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion_body(chat: bool, id: str, model: str, text: str, finish_reason: str, counts: dict) -> dict:
    if chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                  "finish_reason": FINISH_REASONS[finish_reason]}
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": FINISH_REASONS[finish_reason]}
    return {"id": id, "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
            "model": model, "choices": [choice], "usage": counts}


def chunk_body(chat: bool, id: str, model: str, text: str | None, finish_reason: str | None = None,
               role: bool = False) -> dict:
    """One stream chunk: a piece of text, or (text None) the closing chunk with the finish reason."""
    reason = None if finish_reason is None else FINISH_REASONS[finish_reason]
    if chat:
        delta = {} if text is None else {"content": text}
        if role:
            delta["role"] = "assistant"
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
    else:
        choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": reason}
    return {"id": id, "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()), "model": model, "choices": [choice]}


def usage_chunk(chat: bool, id: str, model: str, counts: dict) -> dict:
    """The last chunk when stream_options.include_usage is set: no choices, the token counts."""
    return {"id": id, "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()), "model": model, "choices": [], "usage": counts}
