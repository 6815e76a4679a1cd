"""Constrained decoding on the shipped model: regexes, JSON schemas, any JSON, Lark, for greedy,
sampled and beam search, batches with a constraint per row, streaming, the CLI, bad input."""

import json
import re
import sys

import jsonschema
import pytest
from click.testing import CliRunner

import edgellm
from edgellm.generation import constraints
from edgellm.cli import main

PERSON = {"type": "object", "additionalProperties": False, "required": ["name", "age", "mood"],
          "properties": {"name": {"type": "string", "maxLength": 16},
                         "age": {"type": "integer", "minimum": 0, "maximum": 120},
                         "mood": {"enum": ["merry", "sad", "wroth"]}}}
PROMPTS = ["ROMEO:", "JULIET: Tell me", "KING RICHARD III:\nNow"]


@pytest.fixture(scope="module")
def model():
    return edgellm.load("shakespeare")


def test_json_schema_replies_validate_for_prompts_and_seeds(model):
    schema = constraints.json_schema(PERSON)
    for prompt in PROMPTS:
        for seed in range(3):
            result = model.generate(prompt, constraint=schema, seed=seed, max_new_tokens=80)
            assert result.finish_reason == "eos", result.text
            jsonschema.validate(json.loads(result.text), PERSON)
    greedy = model.generate("ROMEO:", constraint=schema, temperature=0, max_new_tokens=80)
    jsonschema.validate(json.loads(greedy.text), PERSON)
    free = model.generate("ROMEO:", temperature=0, max_new_tokens=20).text
    assert not free.startswith("{")  # the mask, not the model, writes JSON


def test_regexes_match_greedy_sampled_and_beams(model):
    pattern = r" [A-Z][a-z]{2,8}, [a-z]+ [a-z]+[.!?]"
    for settings in ({"temperature": 0}, {"seed": 1}, {"seed": 2, "top_k": 5}, {"num_beams": 3}):
        result = model.generate("ROMEO:", constraint=constraints.regex(pattern), max_new_tokens=40, **settings)
        assert re.fullmatch(pattern, result.text), (settings, result.text)
        assert result.finish_reason == "eos"


def test_a_batch_takes_one_constraint_per_row(model, tiny_folder):
    rows = [constraints.regex(r"[0-9]{3}"), None, constraints.json_schema(PERSON), constraints.lark('start: "ay" | "nay"')]
    results = model.generate(["A", "ROMEO:", "B", "C"], constraint=rows, seed=4, max_new_tokens=60)
    assert re.fullmatch(r"[0-9]{3}", results[0].text)
    # a free row is untouched: checked on float32 weights, since rows of different lengths are
    # left-padded, and padding can move a quantized row's activations across a rounding step
    small = edgellm.load(tiny_folder)
    pair = small.generate(["A", "ROMEO:"], constraint=rows[:2], seed=4, max_new_tokens=20)
    assert re.fullmatch(r"[0-9]{3}", pair[0].text)
    assert pair[1].text == small.generate("ROMEO:", seed=4, max_new_tokens=20).text
    jsonschema.validate(json.loads(results[2].text), PERSON)
    assert results[3].text in ("ay", "nay")
    several = model.generate("ROMEO:", constraint=constraints.json(), num_return_sequences=2, seed=3,
                             max_new_tokens=40, stop_strings=("\n",))
    assert len(several) == 2 and all(r.text.startswith("{") for r in several)


def test_stream_equals_generate_and_limits_still_apply(model):
    schema = constraints.json_schema(PERSON)
    assert "".join(model.stream("ROMEO:", constraint=schema, seed=7, max_new_tokens=80)) == \
        model.generate("ROMEO:", constraint=schema, seed=7, max_new_tokens=80).text
    cut = model.generate("ROMEO:", constraint=schema, seed=7, max_new_tokens=6)
    assert cut.finish_reason == "length" and len(cut.token_ids) == 6 and cut.text.startswith('{"name"')
    with pytest.raises(ValueError):
        json.loads(cut.text)  # a cut-off document does not parse: finish_reason says why
    stopped = model.generate("ROMEO:", constraint=schema, seed=7, max_new_tokens=80, stop_strings=('"age"',))
    assert stopped.finish_reason == "stop" and stopped.text.endswith(", ")


def test_any_json_object_and_no_eos(model):
    result = model.generate("ROMEO:", constraint=constraints.json_schema({"type": "array", "maxItems": 3,
                                                                         "items": {"type": "integer", "maximum": 99}}),
                            seed=1, stop_token_ids=())
    assert result.finish_reason == "eos" and isinstance(json.loads(result.text), list)  # the grammar ended it
    with pytest.raises(ValueError, match="Beam search with a constraint needs a stop token id"):
        model.generate("ROMEO:", constraint=constraints.json(), num_beams=2, stop_token_ids=())


BAD = [
    (lambda: constraints.regex("[a-"), "unclosed character class"),
    (lambda: constraints.regex(r"(?=a)b"), "look-around"),
    (lambda: constraints.json_schema("{not json"), "not valid JSON"),
    (lambda: constraints.json_schema({"type": "wat"}), "Invalid type"),
    (lambda: constraints.json_schema({"type": "object", "if": {}}), "Unimplemented keys"),
    (lambda: constraints.json_schema({"type": "string", "minLength": 5, "maxLength": 2}), "Unsatisfiable"),
    (lambda: constraints.regex(r"a[^\s\S]"), "No text the model's vocabulary can write"),
    (lambda: constraints.lark("start: foo"), "cannot be compiled"),
    (lambda: constraints.json_schema(b'{"type": "string", "description": "caf\xe9"}'), "json_schema is not UTF-8"),
    (lambda: constraints.json_schema(b'\xff\xfe{"type": "string"}'), "json_schema is not UTF-8 (byte offset 0)"),
    (lambda: constraints.json_schema(nested_schema(200)), "json_schema is nested 201 levels deep"),
    (lambda: constraints.json_schema(nested_schema(5000)), "json_schema is nested 5001 levels deep"),
    (lambda: constraints.json_schema("[" * 5000 + "]" * 5000), "json_schema is nested too deeply to read"),
    (lambda: constraints.regex("(" * 300 + "a" + ")" * 300), "cannot be compiled"),
]


def nested_schema(levels: int) -> dict:
    schema = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "array", "items": schema}
    return schema


def test_the_deepest_schema_taken_compiles(model):
    """MAX_SCHEMA_DEPTH keeps llguidance's limit out of sight: a schema that deep compiles."""
    model.compile(constraints.json_schema(nested_schema(constraints.MAX_SCHEMA_DEPTH - 1)))


def test_bad_constraints_are_one_clear_error(model):
    for make, words in BAD:
        with pytest.raises(ValueError, match=re.escape(words)):
            model.generate("ROMEO:", constraint=make(), max_new_tokens=4)
    with pytest.raises(ValueError, match="one per prompt"):
        model.generate(["A", "B"], constraint=[constraints.json()], max_new_tokens=4)
    assert model.generate("ROMEO:", seed=0, max_new_tokens=8).text  # nothing else affected


def test_cli_constraints(model, tmp_path):
    runner = CliRunner()
    schema_file = tmp_path / "person.json"
    schema_file.write_text(json.dumps(PERSON))
    for args in (["--json-schema", str(schema_file)], ["--json-schema", json.dumps(PERSON)]):
        result = runner.invoke(main, ["generate", "ROMEO:", "--seed", "2", "-n", "80", *args])
        assert result.exit_code == 0, result.output
        jsonschema.validate(json.loads(result.stdout[len("ROMEO:"):]), PERSON)
    result = runner.invoke(main, ["generate", "ROMEO:", "--regex", r" [A-Z]{2,8}!", "-t", "0"])
    assert result.exit_code == 0 and re.fullmatch(r"ROMEO: [A-Z]{2,8}!\n", result.stdout), result.output
    result = runner.invoke(main, ["generate", "ROMEO:", "--json", "--seed", "1", "-n", "10"])
    assert result.exit_code == 0 and result.stdout.startswith("ROMEO:{")
    latin1, deep = tmp_path / "latin1.json", tmp_path / "deep.json"
    latin1.write_bytes(b'{"type": "string", "description": "caf\xe9"}')
    deep.write_text(json.dumps(nested_schema(200)))
    for args, words in ((["--regex", "[a-"], "unclosed character class"), (["--json", "--regex", "a"], "one constraint"),
                        (["--json-schema", "missing.json"], "no such file"), (["--json-schema", "{bad"], "not valid JSON"),
                        (["--json-schema", str(latin1)], f"--json-schema: {latin1} is not UTF-8 (byte offset 38)"),
                        (["--json-schema", str(deep)], "json_schema is nested 201 levels deep")):
        result = runner.invoke(main, ["generate", "ROMEO:", *args])
        assert result.exit_code != 0 and words in result.output and "Traceback" not in result.output, result.output


def test_missing_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "llguidance", None)  # import llguidance now fails as if not installed
    result = CliRunner().invoke(main, ["generate", "ROMEO:", "--json"])
    assert result.exit_code == 1 and "pip install 'edgellm[structured]'" in result.output, result.output
    assert "Traceback" not in result.output
    with pytest.raises(ModuleNotFoundError, match="edgellm\\[structured\\]"):
        edgellm.load("shakespeare").generate("ROMEO:", constraint=constraints.json())
