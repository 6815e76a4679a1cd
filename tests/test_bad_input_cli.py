"""Bad values of the CLI's options, found systematically: every numeric option of every command
declares its range, a value outside it (or no number at all) ends in one `Error:` line and a
non-zero exit without a traceback, and escapes in text options follow one rule."""

import click
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgellm.cli import main
from edgellm.cli.options import THREADS, decode_escapes
from edgellm.folder.generation_config import GenerationConfig
from edgellm.session.session import MAX_THREADS
from edgellm.training.options import names as train_option_names

FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# options filled from a dataclass that checks them (GenerationConfig, TrainOptions), so the CLI,
# the library and the server refuse the same values with the same line
CHECKED_BY_DATACLASS = {"train": set(train_option_names()),
                        "generate": set(GenerationConfig.field_names()), "chat": set(GenerationConfig.field_names())}
NOT_A_NUMBER = st.sampled_from(["", "abc", "nan", "inf", "-inf", "1e400", "0x10", "1.5.2", "--", "1 2"])


def commands(group=main, prefix=()):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from commands(command, (*prefix, name))
        else:
            yield (*prefix, name), command
    if group is main:  # loaded only when called
        yield ("train",), main.get_command(click.Context(main), "train")


def numeric_options():
    for path, command in commands():
        for param in command.params:
            if isinstance(param, click.Option) and isinstance(param.type, (click.types.IntParamType,
                                                                           click.types.FloatParamType)):
                yield path, param


def run(args, **kwargs):
    return CliRunner().invoke(main, list(args), **kwargs)


def assert_one_line_error(result, exit_codes=(1, 2)):
    assert result.exit_code in exit_codes, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    error_lines = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(error_lines) == 1, result.output


def test_every_numeric_option_declares_its_range():
    unranged = [f"{' '.join(path)} {param.opts[0]}" for path, param in numeric_options()
                if not isinstance(param.type, click.types._NumberRangeBase)
                and param.name not in CHECKED_BY_DATACLASS.get(path[0], ())]
    assert unranged == []
    assert THREADS.max == MAX_THREADS


def _outside(param):
    """Values outside the option's range, or no number at all."""
    low, high = param.type.min, param.type.max
    below = st.integers(max_value=low - 1) if low is not None else st.nothing()
    above = st.integers(min_value=high + 1) if high is not None else st.nothing()
    return st.one_of(below, above, NOT_A_NUMBER).map(str)


RANGED = [(path, param) for path, param in numeric_options() if isinstance(param.type, click.types._NumberRangeBase)]


@pytest.mark.parametrize("path, param", RANGED, ids=[f"{' '.join(p)} {o.opts[0]}" for p, o in RANGED])
@FUZZ
@given(data=st.data())
def test_a_value_outside_an_options_range_is_one_line(path, param, data, tmp_path):
    value = data.draw(_outside(param))
    arguments = {"generate": ["hi"], "eval": [__file__], "export": [str(tmp_path), str(tmp_path / "out")],
                 "serve": ["shakespeare"], "web": ["shakespeare"], "tokenizer train": [__file__], "train": [__file__, "--out", str(tmp_path)]}
    result = run([*path, *arguments.get(" ".join(path), []), param.opts[0], value])
    assert result.exit_code == 2, result.output  # click's usage error: nothing ran
    assert_one_line_error(result, (2,))
    assert not (tmp_path / "out").exists()


GENERATION_NUMBERS = [f for f in GenerationConfig.field_names()
                      if GenerationConfig.__dataclass_fields__[f].type in ("int", "float", "int | None")]


@FUZZ
@given(name=st.sampled_from(GENERATION_NUMBERS),
       value=st.one_of(st.integers(max_value=-1), st.integers(min_value=2**64), NOT_A_NUMBER,
                       st.floats(allow_nan=True, allow_infinity=True).filter(lambda x: x < 0 or x != x)).map(str))
def test_a_bad_generation_setting_is_one_line(tiny_folder, name, value):
    result = run(["generate", "hi", "-m", str(tiny_folder), "-n", "2", f"--{name.replace('_', '-')}", value])
    if result.exit_code == 0:  # a value GenerationConfig accepts (a huge seed, a negative penalty)
        GenerationConfig(**{name: int(value) if value.lstrip("-").isdigit() else float(value)})
        return
    assert_one_line_error(result)


@FUZZ
@given(name=st.sampled_from(["steps", "lr", "context", "width", "batch-size", "dropout", "val-fraction",
                             "eval-interval", "warmup", "beta2", "time-budget"]),
       value=st.one_of(st.integers(max_value=-1), st.floats(max_value=-1e-9), NOT_A_NUMBER))
def test_a_bad_training_option_is_one_line(name, value, tmp_path):
    out = tmp_path / "run"
    result = run(["train", __file__, "--out", str(out), f"--{name}", str(value)])
    assert_one_line_error(result)
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("args", [["--out", "x"], [__file__, "--out", "x", "--steps", "0"],
                                  [__file__, "--out", "x", "--lr", "-1"]])
def test_train_usage_errors_come_before_keras_starts(args, tmp_path):
    import subprocess
    import sys

    code = ("import sys; from click.testing import CliRunner; from edgellm.cli import main; "
            f"r = CliRunner().invoke(main, ['train', *{args!r}]); "
            "print(r.exit_code, 'keras' in sys.modules, 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=tmp_path).stdout.split()
    assert out[1:] == ["False", "False"] and out[0] in ("1", "2")


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_escapes_keep_every_character_but_a_backslash(text):
    """Text without a backslash is kept as typed (non-ASCII included); a backslash written as
    \\\\ survives; \\xHH, \\uHHHH and \\n decode to their characters."""
    assert decode_escapes(text.replace("\\", "\\\\")) == text
    if not any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        assert decode_escapes("".join(f"\\U{ord(c):08x}" for c in text)) == text


@pytest.mark.parametrize("stop, reason", [("\\x", "\\x needs 2 hexadecimal digits"), ("\\N", "\\N is not an escape"),
                                          ("a\\", "a backslash at the end"), ("\\ud800", "not a Unicode character")])
def test_a_bad_escape_is_one_line(stop, reason):
    result = run(["generate", "hi", "--stop", stop])
    assert_one_line_error(result, (2,))
    assert reason in result.output and "'--stop'" in result.output


def test_a_stop_string_typed_with_escapes_stops(tiny_folder):
    from edgellm import load

    settings = dict(max_new_tokens=40, temperature=1.0, seed=3, stop_token_ids=())
    text = load(tiny_folder).generate("ROMEO:", **settings).text
    stop = text[10:14]
    typed = f"\\u{ord(stop[0]):04x}" + "".join({"\\": "\\\\", "\n": "\\n", " ": "\\x20"}.get(c, c) for c in stop[1:])
    result = run(["generate", "ROMEO:", "-m", str(tiny_folder), "-n", "40", "-t", "1", "--seed", "3", "--ignore-eos",
                  "--stop", typed])
    assert result.exit_code == 0 and result.output == "ROMEO:" + text[:text.index(stop)] + "\n", (typed, text)
    assert text.index(stop) > 0


def test_non_ascii_text_with_an_escape_is_kept():
    assert decode_escapes("Où est\\x20la") == "Où est la"
    assert decode_escapes("naïve\\u00e9\\n") == "naïveé\n"
