"""Every output the manuals show for seeded or greedy generation is what the code gives today.

In README.md and docs/*.md:
- a Python block's line `print(EXPR)  # LITERAL` is checked by running the page's Python blocks in
  order up to that line and comparing EXPR's value with LITERAL, a Python literal (a quoted string
  shows a leading space; a dict is written as Python prints it);
- a line `-> [ids] (edgellm's ids)` under a `node onnxruntime_web.mjs '{...}'` call is the
  runtime's greedy ids for that call's case.
A page that shows an output in another form is not checked: write it in one of these.
And docs/server.md's client snippets run against the folder its first `edgellm serve` serves.
"""

import ast
import json
import re
import shutil
from pathlib import Path

import pytest

import edgellm
from edgellm.folder import model_folder
from serving import running

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PYTHON = re.compile(r"^```python\n(.*?)^```", re.M | re.S)
SHOWN = re.compile(r"^(\s*)print\((.*?)\)\s+#\s*(.+)$")
NODE_CASE = re.compile(r"node onnxruntime_web\.mjs '(\{.*\})'\n\s*-> (\[[\d,]+\])\s+\(edgellm's ids\)")


def shown_in_python(page: Path) -> list[tuple[int, str, str]]:
    """(line number, EXPR, LITERAL) of each checked print line of the page."""
    text = page.read_text(encoding="utf-8")
    found = []
    for block in PYTHON.finditer(text):
        first = text.count("\n", 0, block.start(1)) + 1
        for i, line in enumerate(block.group(1).splitlines()):
            if (match := SHOWN.match(line)) and _literal(match.group(3)):
                found.append((first + i, match.group(2), match.group(3)))
    return found


def _literal(comment: str) -> bool:
    """Whether a comment is a Python literal (an output shown), not words."""
    try:
        ast.literal_eval(comment)
    except (ValueError, SyntaxError):
        return False
    return True


def run_page(page: Path) -> dict[int, object]:
    """Run the page's Python blocks in order, up to its last checked line, in one namespace;
    returns {line number: the value each checked print line would print}."""
    text = page.read_text(encoding="utf-8")
    checked = {line for line, _, _ in shown_in_python(page)}
    values: dict[int, object] = {}
    namespace = {"__shown__": values}
    for block in PYTHON.finditer(text):
        first = text.count("\n", 0, block.start(1)) + 1
        if first > max(checked):
            break
        lines = block.group(1).splitlines()
        source = "\n".join(f"{m.group(1)}__shown__[{first + i}] = ({m.group(2)})"
                           if first + i in checked and (m := SHOWN.match(line)) else line
                           for i, line in enumerate(lines))
        exec(compile(source, f"{page.name}:{first}", "exec"), namespace)
    return values


PAGES_WITH_OUTPUT = [p for p in PAGES if shown_in_python(p)]


def test_the_manuals_show_outputs_in_the_checked_form():
    assert {p.name for p in PAGES_WITH_OUTPUT} >= {"runtime.md", "tasks.md"}
    assert any(NODE_CASE.search(p.read_text(encoding="utf-8")) for p in PAGES)


@pytest.mark.parametrize("page", PAGES_WITH_OUTPUT, ids=lambda p: p.name)
def test_python_outputs_shown_are_what_the_code_gives(page):
    values = run_page(page)
    for line, expr, literal in shown_in_python(page):
        assert values[line] == ast.literal_eval(literal), \
            f"{page.name}:{line}: print({expr}) shows {literal} but gives {values[line]!r}"


def test_greedy_ids_shown_for_onnxruntime_web_are_the_runtimes():
    for page in PAGES:
        for call in NODE_CASE.finditer(page.read_text(encoding="utf-8")):
            request, shown = json.loads(call.group(1)), json.loads(call.group(2))
            model = edgellm.load((REPO / "tests" / "interop" / request["folder"]).resolve())
            (case,) = request["cases"]
            config = model.settings(temperature=0, max_new_tokens=case["new_tokens"], stop_token_ids=(case["eos"],))
            assert list(model.token_stream(case["prompt_ids"], config)) == shown, page.name


def test_the_server_pages_snippets_run_against_the_folder_it_serves(tmp_path):
    pytest.importorskip("llguidance")  # the structured output snippet
    text = (REPO / "docs" / "server.md").read_text(encoding="utf-8")
    served = re.search(r"^edgellm serve (\S+)", text, re.M).group(1)
    folder = tmp_path / Path(served).name  # the model id clients name is the folder's name
    shutil.copytree(model_folder.resolve("shakespeare"), folder)
    blocks = PYTHON.findall(text)
    assert len(blocks) >= 2 and all("http://127.0.0.1:8000" in b or "client." in b for b in blocks)
    with running(edgellm.load(folder)) as url:
        namespace: dict = {}
        for block in blocks:
            exec(compile(block.replace("http://127.0.0.1:8000", url), "server.md", "exec"), namespace)
