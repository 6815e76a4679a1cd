"""Chat templates: the Jinja text in tokenizer_config.json that turns messages into a prompt.

A model folder's tokenizer_config.json holds one `chat_template`, which transformers,
transformers.js and onnxruntime-genai render with their own Jinja engines and edgellm renders
with `edgellm.jinja` (a small subset of Jinja, so the runtime needs no template library). Two
templates are written by `edgellm export`:

- TEXT_TEMPLATE, for plain language models: one "Role: content" line per message, then
  "Assistant:" for the model to continue (the layout of `edgellm serve`'s chat endpoint and of
  `edgellm chat`). The names of the user and the assistant may be changed with the template
  variables `user_name` and `assistant_name`.
- TASK_TEMPLATE, for task models (edgellm/tasks.py): the user's prompt, then <|completion|>.

Encoding differs from Hugging Face's in one point: a special-token string typed inside a
message (say "<|endoftext|>") stays plain text in edgellm, where transformers encodes it as the
special id; special tokens that the template itself writes are special ids in both.

Example:
    >>> render(TEXT_TEMPLATE, [{"role": "user", "content": "Hello"}])
    'User: Hello\\nAssistant:'
"""

from __future__ import annotations

import contextlib

import regex

from edgellm import jinja

TEXT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ user_name or 'User' }}"
    "{% elif message['role'] == 'assistant' %}{{ assistant_name or 'Assistant' }}"
    "{% elif message['role'] == 'system' or message['role'] == 'developer' %}{{ 'System' }}"
    "{% else %}{{ raise_exception('Unknown role ' + message['role'] + ': use system, user or assistant.') }}"
    "{% endif %}{{ ': ' + message['content'] + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ (assistant_name or 'Assistant') + ':' }}{% endif %}"
)

TASK_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ message['content'] }}"
    "{% elif message['role'] == 'assistant' %}{{ '<|completion|>' + message['content'] + '<|endoftext|>' }}"
    "{% else %}{{ raise_exception('A task model takes user and assistant messages. Received role ' "
    "+ message['role'] + '.') }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|completion|>' }}{% endif %}"
)

_MARK = "\x00{}\x00"  # stands for message i's content while the template renders


def render(template: str, messages: list[dict], add_generation_prompt: bool = True, where: str | None = None,
           **variables) -> str:
    """The prompt text of `messages` ({"role", "content"} dicts) under `template`.

    Args:
        template: Jinja source (a folder's chat_template).
        messages: the conversation, oldest first.
        add_generation_prompt: end with the text after which the model writes its reply.
        where: the file the template comes from (a folder's tokenizer_config.json), named by errors.
        **variables: more template variables (`user_name`, `assistant_name`).
    """
    with _named(where):
        return jinja.render(template, messages=messages, add_generation_prompt=add_generation_prompt, **variables)


@contextlib.contextmanager
def _named(where: str | None):
    """A TemplateError says which file's chat_template failed: the template's own fault ("Fix
    ..."), or a raise_exception() the template made on purpose (its message, for the caller)."""
    try:
        yield
    except jinja.TemplateError as error:
        message = str(error)
        if where is None:
            raise
        if message.startswith("chat_template: "):
            message = (f"{where}: chat_template: {message.removeprefix('chat_template: ')} Fix the template in "
                       "that file (edgellm renders the Jinja subset described in edgellm/jinja).")
        else:
            message = f"{message} (raised by the chat_template of {where})"
        raise jinja.TemplateError(message) from None


def encode(tokenizer, template: str, messages: list[dict], add_generation_prompt: bool = True,
           **variables) -> list[int]:
    """The ids of the rendered prompt: special-token strings written by the template are special
    ids, the messages' contents are plain text (see the module docstring).

    Example:
        >>> tokenizer = edgellm.load("en-fr").tokenizer
        >>> ids = encode(tokenizer, TASK_TEMPLATE, [{"role": "user", "content": "English: Go.\\nFrench:"}])
        >>> ids[-1] == tokenizer.special_tokens["<|completion|>"]
        True
    """
    marked = [{**m, "content": _MARK.format(i)} for i, m in enumerate(messages)]
    layout = render(template, marked, add_generation_prompt, **variables)
    text, spans = [], []  # spans: (start, end) of each content in the rendered text
    length = 0
    for piece in regex.split(r"(\x00\d+\x00)", layout):
        if regex.fullmatch(r"\x00\d+\x00", piece):
            piece = str(messages[int(piece[1:-1])]["content"])
            spans.append((length, length + len(piece)))
        text.append(piece)
        length += len(piece)
    text = "".join(text)
    if text != render(template, messages, add_generation_prompt, **variables):
        raise ValueError("The chat template changes the messages' contents (a filter such as trim?). "
                         "edgellm encodes contents as plain text and needs the template to insert them unchanged.")
    ids, start = [], 0
    specials = sorted(tokenizer.special_tokens, key=len, reverse=True)
    if specials:
        for match in regex.finditer("|".join(map(regex.escape, specials)), text):
            if any(a <= match.start() < b for a, b in spans):
                continue  # typed by the user: plain text
            ids += tokenizer.encode(text[start:match.start()])
            ids.append(tokenizer.special_tokens[match.group()])
            start = match.end()
    ids += tokenizer.encode(text[start:])
    return ids
