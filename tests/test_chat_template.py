"""edgellm's Jinja subset renders chat templates as transformers' jinja2 does (trim_blocks,
lstrip_blocks), refuses what it cannot render, and encodes typed special tokens as text."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgellm import jinja
from edgellm.chat import template as chat_template
from edgellm.generator import load

jinja2 = pytest.importorskip("jinja2")
from jinja2.sandbox import ImmutableSandboxedEnvironment  # noqa: E402


def jinja2_render(template: str, **variables) -> str:
    """As transformers renders chat templates."""
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(**variables)


TEMPLATES = [
    chat_template.TEXT_TEMPLATE,
    chat_template.TASK_TEMPLATE,
    # the multi-line style of Hugging Face templates: block tags on their own lines, indented
    "{% for message in messages %}\n    {% if loop.first and message.role != 'system' %}\n[start]\n    {% endif %}\n"
    "<{{ message.role }}>{{ message['content'] | trim }}</{{ message.role }}>\n{% endfor %}\n"
    "{%- if add_generation_prompt -%}\n  <assistant>\n{%- endif %}",
    "{% set sep = ' | ' %}{# a comment #}{% for m in messages %}{{ loop.index }}/{{ loop.length }}:"
    "{{ m['content'] ~ sep }}{% if not loop.last %}{{ '-' }}{% endif %}{% endfor %}"
    "{{ messages | length }}{{ messages[-1]['role'] }}{% if user_name is defined %}!{% endif %}"
    "{% if 'x' in messages[0]['content'] %}has x{% elif messages[0]['content'] == '' %}empty{% else %}no x{% endif %}",
]

message = st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]),
                                 "content": st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)})


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(TEMPLATES), st.lists(message, min_size=1, max_size=4), st.booleans(),
       st.one_of(st.none(), st.sampled_from(["ROMEO", "Q"])))
def test_renders_as_transformers_jinja2(template, messages, add_generation_prompt, user_name):
    extra = {} if user_name is None else {"user_name": user_name}
    if template == chat_template.TASK_TEMPLATE and any(m["role"] == "system" for m in messages):
        with pytest.raises(jinja.TemplateError, match="A task model takes user and assistant messages"):
            jinja.render(template, messages=messages, add_generation_prompt=add_generation_prompt, **extra)
        return
    ours = jinja.render(template, messages=messages, add_generation_prompt=add_generation_prompt, **extra)
    assert ours == jinja2_render(template, messages=messages, add_generation_prompt=add_generation_prompt, **extra)


def test_text_template_is_the_server_layout_with_names():
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}]
    assert chat_template.render(chat_template.TEXT_TEMPLATE, messages) == \
        "System: Be brief.\nUser: Hi\nAssistant: Hello.\nUser: Bye\nAssistant:"
    assert chat_template.render(chat_template.TEXT_TEMPLATE, messages[1:2], user_name="ROMEO",
                                assistant_name="JULIET") == "ROMEO: Hi\nJULIET:"
    with pytest.raises(jinja.TemplateError, match="Unknown role tool: use system, user or assistant."):
        chat_template.render(chat_template.TEXT_TEMPLATE, [{"role": "tool", "content": "x"}])


@pytest.mark.parametrize("template, refused", [
    ("{% macro f() %}{% endmacro %}", "the statement {% macro %} is not supported"),
    ("{{ messages | tojson }}", "the filter 'tojson' is not supported"),
    ("{{ 'a'.upper() }}", "calls only raise_exception"),
    ("{% for m in messages %}", "missing {% endfor %}"),
    ("{{ x is odd }}", "the test 'is odd' is not supported"),
    ("{{ 'a' }", "cannot read"),
])
def test_what_the_subset_cannot_render_is_named(template, refused):
    with pytest.raises(jinja.TemplateError, match=re.escape(refused)) as error:
        jinja.render(template, messages=[])
    assert str(error.value).startswith("chat_template: ")


def test_typed_special_tokens_stay_text_template_ones_are_special():
    model = load("en-fr")
    tokenizer, template = model.tokenizer, model.folder.chat_template
    end, completion = tokenizer.special_tokens["<|endoftext|>"], tokenizer.special_tokens["<|completion|>"]
    typed = "English: <|completion|> <|endoftext|>\nFrench:"
    ids = chat_template.encode(tokenizer, template, [{"role": "user", "content": typed}])
    assert ids == tokenizer.encode(typed) + [completion] and end not in ids
    pair = [{"role": "user", "content": "English: Go.\nFrench:"}, {"role": "assistant", "content": " Va !"}]
    ids = chat_template.encode(tokenizer, template, pair, add_generation_prompt=False)
    assert ids == tokenizer.encode("English: Go.\nFrench:") + [completion] + tokenizer.encode(" Va !") + [end]
    with pytest.raises(ValueError, match="changes the messages' contents"):
        chat_template.encode(tokenizer, "{{ messages[0]['content'] | trim }}", [{"role": "user", "content": " a "}])
