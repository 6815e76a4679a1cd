"""OpenAI's completion and chat formats: checking request bodies and messages, stop strings,
and the response and stream-chunk bodies. Plain Python: no HTTP stack, no model.

Every field of a body is on an allow-list (`COMPLETION_FIELDS`, `CHAT_FIELDS`): a field edgellm
does not support is refused with a 400 naming it, never ignored (those in `OFF_ONLY` pass only at
the value that means "off"). `response_format` becomes a constraint (edgellm.generation.constraints).

The server (`app.py`) turns a request body into a `Request` with `parse_completion` or
`parse_chat`, runs it, and answers with the bodies of responses.py.

Example:
    >>> request = parse_completion({"prompt": "ROMEO:", "max_tokens": 8, "temperature": 0})
    >>> request.prompt, request.settings
    ('ROMEO:', {'max_new_tokens': 8, 'temperature': 0})
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgellm.generation import constraints

# OpenAI name -> edgellm GenerationConfig name. top_k, min_p and repetition_penalty are not
# OpenAI's but vLLM and llama.cpp accept them too; the openai client sends them with extra_body.
SETTINGS = {"max_tokens": "max_new_tokens", "max_completion_tokens": "max_new_tokens",
            "temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
            "repetition_penalty": "repetition_penalty", "seed": "seed", "presence_penalty": "presence_penalty",
            "frequency_penalty": "frequency_penalty"}
INTEGERS = {"max_tokens", "max_completion_tokens", "top_k", "seed"}
# Known fields edgellm does not implement: accepted only at the value that means "off".
OFF_ONLY = {"best_of": (1,), "suffix": ("",), "tools": ([],), "functions": ([],), "tool_choice": ("none",),
            "function_call": ("none",), "parallel_tool_calls": (), "store": (False,), "metadata": ({},),
            "modalities": (["text"],), "service_tier": ("auto", "default")}
COMMON_FIELDS = {"model", "stream", "stream_options", "stop", "n", "logit_bias", "response_format",
                 "user", *SETTINGS, *OFF_ONLY} - {"max_completion_tokens"}
COMPLETION_FIELDS = COMMON_FIELDS | {"prompt", "logprobs", "echo"}
CHAT_FIELDS = COMMON_FIELDS | {"messages", "max_completion_tokens", "logprobs", "top_logprobs"}
MAX_STOPS = 4
MAX_CHOICES = 16  # n: the choices of a request run as one batch in one worker
MAX_LOGPROBS = {False: 5, True: 20}  # completions' logprobs, chat's top_logprobs (OpenAI's limits)
BIAS_RANGE = 100  # logit_bias values, as OpenAI

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
    prompt: str | list[int] | None  # the text the model continues, or its ids (None: chat messages)
    settings: dict  # GenerationConfig overrides
    stop: tuple[str, ...] = ()
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage: a last chunk with token counts
    model: str | None = None
    names: dict = field(default_factory=dict)  # GenerationConfig name -> the OpenAI name received
    constraint: constraints.Constraint | None = None  # from response_format
    n: int = 1  # choices
    logprobs: int | None = None  # None: off; else the number of top alternatives per token
    echo: bool = False  # the prompt comes back before the text (with its logprobs if asked)
    score_only: bool = False  # echo with max_tokens 0: the prompt is scored, nothing generated
    messages: list[dict] | None = None  # a chat's checked messages, for the folder's chat template


def parse_completion(body: dict) -> Request:
    """Check a /v1/completions body; `prompt` is a string or token ids, or a list of one of them."""
    _check_fields(body, COMPLETION_FIELDS, "/v1/completions")
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]
    ids = isinstance(prompt, list) and prompt and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
                                                      for i in prompt)
    if not isinstance(prompt, str) and not ids:
        raise RequestError("prompt must be a string or a list of token ids, or a list of one of them. Received: "
                           f"prompt={_short(prompt)}. Send one prompt per request.", "prompt")
    request = _parse_common(body, prompt, ())
    echo = body.get("echo")
    if echo is not None and not isinstance(echo, bool):
        raise RequestError(f"echo must be true or false. Received: echo={_short(echo)}", "echo")
    request.echo = bool(echo)
    if request.echo and body.get("max_tokens") == 0:  # score the prompt only (lm-eval's log-likelihoods)
        del request.settings["max_new_tokens"]
        request.score_only = True
    request.logprobs = _count(body, "logprobs", MAX_LOGPROBS[False])
    return request


def parse_chat(body: dict, task_model: bool = False) -> Request:
    """Check a /v1/chat/completions body. Its messages are encoded later, off the event loop, in
    the model folder's chat template (`ModelFolder.encode_chat`, as `edgellm chat` encodes them).

    A task model (translation, question answering) has no conversation layout: it answers one
    user message, which the generator wraps in the task template as it does a completion prompt.
    Anything else (a system message, earlier turns) is refused rather than dropped.
    """
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(f"messages must be a non-empty list of {{role, content}} objects. "
                           f"Received: messages={_short(messages)}", "messages")
    _check_fields(body, CHAT_FIELDS, "/v1/chat/completions")
    if task_model:
        request = _parse_common(body, task_message(messages), ())
    else:
        request = _parse_common(body, None, CHAT_STOPS)
        request.messages = check_messages(messages)
    wanted = body.get("logprobs")
    if wanted is not None and not isinstance(wanted, bool):
        raise RequestError(f"logprobs must be true or false. Received: logprobs={_short(wanted)}", "logprobs")
    top = _count(body, "top_logprobs", MAX_LOGPROBS[True])
    if top is not None and not wanted:
        raise RequestError(f"top_logprobs needs logprobs: true. Received: top_logprobs={top}", "top_logprobs")
    request.logprobs = (top or 0) if wanted else None
    return request


def task_message(messages: list) -> str:
    """The one user message a task model answers (its prompt, before the task template)."""
    roles = [m.get("role") if isinstance(m, dict) else None for m in messages]
    if roles != ["user"]:
        raise RequestError("This is a task model: it answers one user message, in its task template. "
                           f"Received: messages with roles {_short(roles)}. Send one message with role "
                           '"user", or send the prompt to /v1/completions.', "messages")
    return _content_text(messages[0].get("content"), 0)


def check_messages(messages: list) -> list[dict]:
    """The messages as {role, content} dicts with text contents, or a 400 naming the bad one."""
    checked = []
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if not isinstance(role, str) or role not in CHAT_ROLES:
            raise RequestError(f"messages[{i}].role must be one of {sorted(CHAT_ROLES)}. Received: {_short(role)}",
                               f"messages[{i}].role")
        checked.append({"role": role, "content": _content_text(message.get("content"), i)})
    return checked


def _content_text(content, i: int) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                         and isinstance(p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    raise RequestError(f"messages[{i}].content must be a string or a list of text parts. "
                       f"Received: {_short(content)}", f"messages[{i}].content")


def _check_fields(body: dict, allowed: set, endpoint: str) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        name = unknown[0]
        raise RequestError(f"{name} is not a field this server supports on {endpoint}. Received: "
                           f"{name}={_short(body[name])}. Leave it out (docs/server.md lists the fields).", name)
    for name, off in OFF_ONLY.items():
        if body.get(name) is not None and body[name] not in off:
            raise RequestError(f"{name} is not supported by this server. Received: {name}={_short(body[name])}. "
                               "Leave it out.", name)


def _count(body: dict, name: str, most: int) -> int | None:
    """An optional integer field in [0, most]."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= most:
        raise RequestError(f"{name} must be an integer in [0, {most}]. Received: {name}={_short(value)}", name)
    return value


def _parse_common(body: dict, prompt, default_stops: tuple[str, ...]) -> Request:
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise RequestError(f"model must be a string. Received: model={_short(model)}", "model")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise RequestError(f"user must be a string. Received: user={_short(user)}", "user")
    n = body.get("n")
    n = 1 if n is None else n
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_CHOICES:
        raise RequestError(f"n must be an integer in [1, {MAX_CHOICES}] (the choices run together as one batch). "
                           f"Received: n={_short(n)}", "n")
    settings, names = {}, {}
    if n > 1:
        settings["num_return_sequences"], names["num_return_sequences"] = n, "n"
    bias = _parse_bias(body.get("logit_bias"))
    if bias:
        settings["logit_bias"], names["logit_bias"] = bias, "logit_bias"
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
    extra = sorted(set(options) - {"include_usage"})
    if extra or not isinstance(options.get("include_usage", False), bool):
        raise RequestError("stream_options may hold include_usage (true or false) only. Received: "
                           f"stream_options={_short(options)}", "stream_options")
    return Request(prompt, settings, _parse_stop(body.get("stop")) + default_stops, stream,
                   bool(options.get("include_usage", False)), model, names,
                   _parse_response_format(body.get("response_format")), n)


def _parse_bias(bias) -> dict[int, float]:
    """logit_bias: {"token id": value in [-100, 100]} (JSON keys are strings)."""
    if bias is None:
        return {}
    good = isinstance(bias, dict) and all(
        isinstance(k, str) and k.isascii() and k.isdigit() and not isinstance(v, bool) and isinstance(v, (int, float))
        and -BIAS_RANGE <= v <= BIAS_RANGE for k, v in bias.items())
    if not good:
        raise RequestError(f"logit_bias must map token ids (as strings) to numbers in [-{BIAS_RANGE}, {BIAS_RANGE}]. "
                           f"Received: logit_bias={_short(bias)}", "logit_bias")
    return {int(k): float(v) for k, v in bias.items()}


def _parse_response_format(spec) -> constraints.Constraint | None:
    """OpenAI's text, json_object and json_schema ({"name", "schema", "strict", "description"});
    edgellm's regex ({"type": "regex", "regex": PATTERN}) and lark ({"type": "lark", "lark": GRAMMAR})."""
    param = "response_format"
    if spec is None:
        return None
    kind = spec.get("type") if isinstance(spec, dict) and isinstance(spec.get("type"), str) else None
    keys = {"text": set(), "json_object": set(), "json_schema": {"json_schema"}, "regex": {"regex"}, "lark": {"lark"}}
    if kind not in keys:
        raise RequestError(f"response_format.type must be one of {sorted(keys)}. Received: "
                           f"response_format={_short(spec)}", param)
    if set(spec) - {"type"} != keys[kind]:
        raise RequestError(f"response_format of type {kind!r} takes {sorted(keys[kind]) or 'no other keys'}. "
                           f"Received: keys {sorted(spec)}", param)
    try:
        if kind == "text":
            return None
        if kind == "json_object":
            return constraints.json()
        if kind == "regex":
            return constraints.regex(spec["regex"])
        if kind == "lark":
            return constraints.lark(spec["lark"])
        inner = spec["json_schema"]
        if not isinstance(inner, dict) or "schema" not in inner or set(inner) - {"name", "schema", "strict",
                                                                               "description"}:
            raise RequestError("response_format.json_schema must be {name, schema, strict, description} with a "
                               f"schema. Received: {_short(inner)}", param)
        if not isinstance(inner.get("strict", False), (bool, type(None))):
            raise RequestError(f"response_format.json_schema.strict must be true or false. Received: "
                               f"{_short(inner['strict'])}", param)
        return constraints.json_schema(inner["schema"])  # strict or not, the schema is enforced
    except RequestError:
        raise
    except ValueError as error:
        raise RequestError(str(error), param) from None


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
