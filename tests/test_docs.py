"""The manuals name only commands and options that exist: every `edgellm COMMAND ... --option`
and `python bench/SCRIPT.py ... --option` written in README.md or docs/ is checked against that
command's `--help`."""

import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgellm.cli import main

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
GROUPS = {"tokenizer"}  # commands with subcommands
FENCED = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
INLINE = re.compile(r"`([^`\n]+)`")


def code(text: str) -> list[str]:
    """The lines of a page's code blocks, and its inline code."""
    blocks = [line for block in FENCED.findall(text) for line in block.splitlines()]
    return blocks + INLINE.findall(FENCED.sub("", text))


def mentions(text: str):
    """(command words, options) of each `edgellm ...` written in a page's code or inline code."""
    for span in code(text):
        for call in re.finditer(r"(?<![\w./-])(?<!from )(?<!import )edgellm ((?:[a-z][a-z-]*)(?: [a-z][a-z-]*)?)([^|;&#]*)", span):
            words = call.group(1).split()
            words = words[:2] if words[0] in GROUPS and len(words) > 1 else words[:1]
            yield tuple(words), re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", call.group(2))


@cache
def help_text(words: tuple[str, ...]) -> str | None:
    result = CliRunner().invoke(main, [*words, "--help"])
    return result.output if result.exit_code == 0 else None


def commands() -> set[str]:
    return set(main.list_commands(None))


def script_mentions(text: str):
    """(script path, options) of each `python SCRIPT.py ...` of the repository in a page's code."""
    for span in code(text):
        for call in re.finditer(r"python ((?:bench|data|examples|training)/[\w/-]+\.py)([^|;&#]*)", span):
            yield call.group(1), re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", call.group(2))


@cache
def script_help(script: str) -> str | None:
    result = subprocess.run([sys.executable, str(REPO / script), "--help"], capture_output=True, text=True,
                            timeout=120, cwd=REPO)
    return result.stdout if result.returncode == 0 else None


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_script_and_option_named_in_the_docs_exists(page):
    missing = []
    for script, options in script_mentions(page.read_text(encoding="utf-8")):
        text = script_help(script)
        if text is None:
            missing.append(f"python {script} --help fails")
            continue
        missing += [f"{script} {o}" for o in options if not re.search(rf"{o}\b", text)]
    assert not missing, f"{page.name} names what the scripts do not have: {sorted(set(missing))}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_command_and_option_named_in_the_docs_exists(page):
    missing = []
    for words, options in mentions(page.read_text(encoding="utf-8")):
        if words[0] not in commands():
            missing.append(f"edgellm {words[0]}")
            continue
        text = help_text(words)
        if text is None:
            missing.append("edgellm " + " ".join(words))
            continue
        missing += [f"edgellm {' '.join(words)} {o}" for o in options if not re.search(rf"{o}\b", text)]
    assert not missing, f"{page.name} names what the CLI does not have: {sorted(set(missing))}"


def test_the_check_sees_a_wrong_option():
    (words, options), = mentions("`edgellm generate --no-such-option`")
    assert words == ("generate",) and options == ["--no-such-option"]
    assert "--no-such-option" not in help_text(words)


def test_the_readme_stays_short():
    """README.md: what it is, the two commands, the pipeline, the shipped models; details in docs/."""
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md is {len(lines)} lines: move details into docs/"
