r"""Command line options for every generation setting, made from `GenerationConfig` itself,
so a setting added there is an option of `edgellm generate` and `edgellm chat` at once; generate's
constraint options (--json-schema, --regex, --json); and the types every command shares.

An option left out keeps the model's default (its generation_config.json). The generation
settings' ranges are GenerationConfig's own checks, so the CLI, the Python API and the server
refuse the same values with the same line; every other numeric option carries its range in its
declaration (click's IntRange, such as THREADS below).

Text with escapes (`--stop`) follows one rule, `decode_escapes`: \n, \t, \r, \\ (a backslash)
and the code points \xHH, \uHHHH and \UHHHHHHHH are understood; any other backslash is refused;
every other character, non-ASCII letters included, is kept as typed.
"""

from __future__ import annotations

import dataclasses
import os
import re

import click

from edgellm.folder.generation_config import TRUNCATE_POLICIES, GenerationConfig

ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}
CODE_POINTS = {"x": 2, "u": 4, "U": 8}  # escape letter -> hex digits
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.?)", re.DOTALL)


def decode_escapes(text: str) -> str:
    r"""Decode the backslash escapes of a text option (the rule above); a ValueError for any other.

    Example:
        >>> decode_escapes(r"Où est\x20la\n")
        'Où est la\n'
    """
    def one(match: re.Match) -> str:
        escape = match.group(1)
        if escape in ESCAPES:
            return ESCAPES[escape]
        if escape[:1] in CODE_POINTS and len(escape) == 1 + CODE_POINTS[escape[0]]:
            point = int(escape[1:], 16)
            if point > 0x10FFFF or 0xD800 <= point <= 0xDFFF:
                raise ValueError(f"\\{escape} is not a Unicode character (a surrogate or above U+10FFFF)")
            return chr(point)
        if escape[:1] in CODE_POINTS:
            raise ValueError(f"\\{escape[0]} needs {CODE_POINTS[escape[0]]} hexadecimal digits")
        shown = "a backslash at the end" if not escape else f"\\{escape}"
        raise ValueError(f"{shown} is not an escape edgellm knows. Use \\n, \\t, \\r, \\\\ (a backslash), "
                         "\\xHH, \\uHHHH or \\UHHHHHHHH")

    return _ESCAPE.sub(one, text)


class EscapedText(click.ParamType):
    """A text option whose backslash escapes are decoded by `decode_escapes`."""

    name = "text"

    def convert(self, value, param, ctx):
        try:
            return decode_escapes(value)
        except ValueError as error:
            self.fail(f'{error}. Received: "{value}"', param, ctx)


CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True}  # every command's click settings
THREADS = click.IntRange(1, 1024)  # onnxruntime intra-op threads: session.MAX_THREADS
SHORT = {"max_new_tokens": "-n", "temperature": "-t"}
# settings whose option differs from the field: (option name, click settings)
SPECIAL = {
    "stop_token_ids": ("--stop-token-id", dict(type=int, multiple=True)),
    "stop_strings": ("--stop", dict(multiple=True, type=EscapedText())),
    "logit_bias": ("--logit-bias", dict(multiple=True, metavar="ID=VALUE")),
    "truncate": ("--truncate", dict(type=click.Choice(TRUNCATE_POLICIES))),
}


def generation_options(command):
    """Decorate a click command with one option per GenerationConfig field, plus --ignore-eos."""
    command = click.option("--ignore-eos", is_flag=True,
                           help="Do not stop at the end-of-text token (clears the stop token ids).")(command)
    for f in reversed(dataclasses.fields(GenerationConfig)):
        name, extra = SPECIAL.get(f.name, (f"--{f.name.replace('_', '-')}", {}))
        if not extra:
            extra = {"type": float if f.type in ("float", float) else int}
        names = [name, SHORT[f.name]] if f.name in SHORT else [name]
        help_text = f.metadata["help"] + ("" if extra.get("multiple") else "  [default: the model's]")
        if f.name == "stop_strings":
            help_text += " Repeatable; the escapes \\n \\t \\r \\\\ \\xHH \\uHHHH \\UHHHHHHHH are understood."
        elif extra.get("multiple"):
            help_text += " Repeatable."
        command = click.option(*names, f.name, default=None, show_default=False, help=help_text, **extra)(command)
    return command


def settings_from_options(options: dict) -> dict:
    """The generation settings given on the command line (pops them from `options`)."""
    settings = {}
    for name in GenerationConfig.field_names():
        value = options.pop(name, None)
        if value is None or value == ():
            continue
        if name == "logit_bias":
            value = dict(_parse_bias(item) for item in value)
        settings[name] = value
    if options.pop("ignore_eos", False):
        settings["stop_token_ids"] = ()
    return settings


def _parse_bias(item: str) -> tuple[int, float]:
    key, sep, value = item.partition("=")
    try:
        if not sep:
            raise ValueError
        return int(key), float(value)
    except ValueError:
        raise click.BadParameter(f"must be ID=VALUE, such as 50=-inf or 13=2.5. Received: {item!r}",
                                 param_hint="--logit-bias") from None


def constraint_options(command):
    """--json-schema, --regex and --json: what the generated text must match (the structured extra)."""
    command = click.option("--json", "json_mode", is_flag=True,
                           help="The text is a JSON object (any keys). Needs the structured extra.")(command)
    command = click.option("--regex", metavar="PATTERN",
                           help="The whole text matches this regular expression (Rust regex syntax). "
                                "Needs the structured extra.")(command)
    return click.option("--json-schema", metavar="FILE_OR_JSON",
                        help="The text is JSON valid under this schema: a file, or the schema itself. "
                             "Needs the structured extra.")(command)


def constraint_from_options(options: dict):
    """The constraint given on the command line (pops its options), or None."""
    from edgellm.generation import constraints

    schema, pattern, json_mode = options.pop("json_schema", None), options.pop("regex", None), \
        options.pop("json_mode", False)
    given = [name for name, value in (("--json-schema", schema), ("--regex", pattern), ("--json", json_mode)) if value]
    if len(given) > 1:
        raise click.UsageError(f"Give one constraint at most. Received: {', '.join(given)}")
    if pattern is not None:
        return constraints.regex(pattern)
    if json_mode:
        return constraints.json()
    if schema is None:
        return None
    if os.path.isfile(schema):
        from edgellm.folder import json_file

        with open(schema, "rb") as file:  # the one JSON reader names a file not UTF-8, not JSON, too deep
            data = file.read()
        try:
            schema = json_file.parse(data, schema)
        except ValueError as error:
            raise click.BadParameter(f"{error} Give a UTF-8 JSON schema file or the JSON text.",
                                     param_hint="--json-schema") from None
    elif not schema.lstrip().startswith(("{", "true", "false")):
        raise click.BadParameter(f"must be a JSON schema file or the schema's JSON text. Received: {schema!r} "
                                 "(no such file)", param_hint="--json-schema")
    return constraints.json_schema(schema)
