"""Command line options for every generation setting, made from `GenerationConfig` itself,
so a setting added there is an option of `edgellm generate` and `edgellm chat` at once.

An option left out keeps the model's default (its generation_config.json).
"""

from __future__ import annotations

import codecs
import dataclasses

import click

from edgellm.generation_config import TRUNCATE_POLICIES, GenerationConfig

CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True}  # every command's click settings
SHORT = {"max_new_tokens": "-n", "temperature": "-t"}
# settings whose option differs from the field: (option name, click settings)
SPECIAL = {
    "stop_token_ids": ("--stop-token-id", dict(type=int, multiple=True)),
    "stop_strings": ("--stop", dict(multiple=True)),
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
            help_text += " Repeatable; backslash escapes such as \\n are understood."
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
        if name == "stop_strings":
            value = tuple(codecs.decode(s, "unicode_escape") if "\\" in s else s for s in value)
        elif name == "logit_bias":
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
