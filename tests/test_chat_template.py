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


# ---- hostile templates: jinja2's behaviour where it defines one, else the one error type --------

JINJA2_DEFINED = [
    "{{ u | length }}", "{{ 'a' in u }}", "{{ u in messages }}", "{{ u == u }}", "{{ u == 1 }}", "{{ u ~ 'a' }}",
    "{% for x in u %}x{% endfor %}", "{{ u | trim }}", "{{ not u }}", "{{ -true }}", "{{ 'ab'[5] }}",
    "{{ u + 1 }}", "{{ -u }}", "{{ u.x }}", "{{ u['x'] }}", "{{ messages.x.y }}", "{{ u < 1 }}", "{{ u in 'abc' }}",
    "{{ -'a' }}", "{{ -none }}", "{{ 5 | length }}", "{{ none | length }}", "{{ 'a' < 1 }}", "{{ 1 in 5 }}",
    "{% for x in 5 %}{% endfor %}", "{{ 3 - 'a' }}", "{{ 'a' + 1 }}",
    "{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}", "{% if true %}" * 3000 + "x" + "{% endif %}" * 3000,
    "{{ " + "-" * 3000 + "1 }}", "{{ " + "not " * 3000 + "u }}",
]


@pytest.mark.parametrize("template", JINJA2_DEFINED, ids=lambda t: t[:40])
def test_hostile_templates_render_as_jinja2_or_fail_with_one_line(template):
    variables = dict(messages=[{"role": "user", "content": "hi"}])
    try:
        expected = jinja2_render(template, **variables)
    except Exception:  # jinja2 refuses it (UndefinedError, TypeError, RecursionError...): so does edgellm
        with pytest.raises(jinja.TemplateError, match="^chat_template: ") as error:
            jinja.render(template, **variables)
        assert "\n" not in str(error.value)
        return
    assert jinja.render(template, **variables) == expected


PIECES = st.sampled_from([
    "{{", "}}", "{%", "%}", "{#", "#}", "{{-", "-}}", "-", "(", ")", "[", "]", ".", ",", "|", "~", "+", "=", "==",
    "<", "'a'", '"b"', "'\\n'", "1", "0", "u", "m", "messages", "messages[0]", "loop", "loop.index", "length",
    "trim", "for", "in", "if", "elif", "else", "endif", "endfor", "set", "not", "and", "or", "is", "defined",
    "none", "true", "raise_exception('x')", " ", "\n", "text"])
NESTED = st.tuples(st.integers(0, 1500), st.sampled_from(["(", "-", "not ", "[", "{% if true %}", "{% for m in u %}"]))


@settings(max_examples=300, deadline=None)
@given(st.lists(PIECES, max_size=25).map(" ".join), NESTED, st.lists(message, max_size=3))
def test_any_template_fails_only_with_a_template_error(pieces, nesting, messages):
    depth, opener = nesting
    for template in (pieces, "{{ " + opener * depth + pieces + " }}", opener * depth + pieces):
        try:
            ours = chat_template.render(template, messages, where="tokenizer_config.json")
        except jinja.TemplateError:  # the one error type: any other fails the test
            continue
        if depth > 20:
            continue  # deep nesting: only the error type matters (jinja2 takes seconds to compile it)
        try:
            theirs = jinja2_render(template, messages=messages, add_generation_prompt=True)
        except Exception:
            continue  # edgellm renders a few things jinja2 refuses (an undefined loop in the subset's forms)
        assert ours == theirs, template


@pytest.mark.parametrize("template, refused", [
    ("{% for m in messages %}" * 30 + "x" + "{% endfor %}" * 30, "more than 1,000,000 steps"),
    ("{% set x = 'ab' %}" + "{% for m in messages %}{% set x = x ~ x %}" * 40 + "{{ x }}" + "{% endfor %}" * 40,
     "longer than 10,000,000"),
])
def test_a_template_that_would_run_for_hours_or_fill_memory_is_stopped(template, refused):
    with pytest.raises(jinja.TemplateError, match=refused):
        jinja.render(template, messages=[1, 2, 3])


def folder_with_template(tiny_folder, tmp_path, template: str):
    import json
    import shutil

    folder = tmp_path / "templated"
    shutil.copytree(tiny_folder, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": template}))
    return folder


@pytest.mark.parametrize("template, reason", [
    ("{{ -'a' }}", "cannot apply unary - to str"),
    ("{{ " + "(" * 2000 + "1" + ")" * 2000 + " }}", "nested too deeply"),
    ("{{ messages < 1 }}", "not supported between instances of 'list' and 'int' (TypeError)"),
])
def test_a_broken_template_is_one_line_naming_the_file_in_chat_and_at_serve(tiny_folder, tmp_path, template, reason):
    from click.testing import CliRunner

    from edgellm.cli import main

    folder = folder_with_template(tiny_folder, tmp_path, template)
    for args in (["chat", "-m", str(folder), "-n", "2"], ["serve", str(folder), "--port", "1"]):
        result = CliRunner().invoke(main, args, input="Hi\n")
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
        line = result.stderr.strip().splitlines()[-1]
        assert line.startswith(f"Error: {folder / 'tokenizer_config.json'}: chat_template: ") and reason in line
        assert "Traceback" not in result.output and result.stdout == ""


def test_a_template_failing_on_some_conversations_is_a_400_naming_the_file(tiny_folder, tmp_path):
    import openai

    import edgellm
    from serving import running

    template = ("{% if messages | length > 1 %}{{ -'a' }}{% endif %}"
                "{% for m in messages %}{{ m.content }}{% endfor %}{{ 'Assistant:' }}")
    folder = folder_with_template(tiny_folder, tmp_path, template)
    with running(edgellm.load(folder)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        one = [{"role": "user", "content": "Hi"}]
        assert client.chat.completions.create(model="templated", messages=one, max_tokens=2).choices
        with pytest.raises(openai.BadRequestError) as error:
            client.chat.completions.create(model="templated", messages=one * 2, max_tokens=2)
    body = error.value.body
    assert body["param"] == "messages" and body["message"].startswith(f"{folder / 'tokenizer_config.json'}: chat_template: ")
    assert "cannot apply unary - to str" in body["message"]
