"""Templates: text and tags (lexing with transformers' whitespace rules), statements, rendering."""

from __future__ import annotations

import contextlib
import re

from edgellm.jinja.expressions import Expr as _Expr
from edgellm.jinja.values import MAX_CHARS, MAX_STEPS, UNDEFINED, TemplateError, to_str as _str

_TAG = re.compile(r"\{\{-?|\{%-?|\{#-?")
_TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")|(?P<num>\d+)"
                    r"|(?P<end>-?%\}|-?\}\})|(?P<name>[A-Za-z_]\w*)|(?P<op>==|!=|<=|>=|[-+~<>()\[\].,|=]))")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"'}


def render(template: str, **variables) -> str:
    """Render `template` with `variables`; raises TemplateError naming what it cannot do, and no
    other error whatever the template and the variables (a template is input, as a request is)."""
    out = _Output()
    with _as_template_error():
        _run(parse(template), dict(variables), out)
    return "".join(out.pieces)


def parse(template: str) -> list:
    """The template's statements: checks its syntax without rendering it (TemplateError)."""
    with _as_template_error():
        return _block(_lex(template), 0, ())[0]


@contextlib.contextmanager
def _as_template_error():
    """Any Python error while parsing or rendering a template is the template's: TemplateError."""
    try:
        yield
    except TemplateError:
        raise
    except RecursionError:
        raise TemplateError("chat_template: nested too deeply for edgellm's renderer.") from None
    except Exception as error:  # what jinja2 raises too: comparing a string with a number, ...
        raise TemplateError(f"chat_template: {error} ({type(error).__name__}).") from None


# ---- lexing: text and tags, whitespace control as transformers' jinja2 does ----------------------

def _lex(source: str) -> list:
    source = "\n".join(source.splitlines())  # as jinja2: any line break is "\n", the last one goes
    items, pos, strip_next = [], 0, False
    while True:
        match = _TAG.search(source, pos)
        text = source[pos:match.start() if match else len(source)]
        if strip_next:
            text = text.lstrip()
        if match and match.group().endswith("-"):
            text = text.rstrip()
        elif match and match.group()[1] in "%#":  # lstrip_blocks: a block tag's indentation goes
            text = re.sub(r"(^|\n)[ \t]+$", r"\1", text)
        items.append(("text", text))
        if not match:
            return items
        kind = match.group()[1]
        if kind == "#":
            end = source.find("#}", match.end())
            if end < 0:
                raise TemplateError("chat_template: a {# comment #} is not closed.")
            strip_next, pos = source[end - 1] == "-", end + 2
            continue
        tokens, pos, closing = _tokens(source, match.end())
        if closing[-2:] != ("}}" if kind == "{" else "%}"):
            raise TemplateError(f"chat_template: {match.group()} closed by {closing!r} at character {pos}.")
        strip_next = closing.startswith("-")
        if kind == "%" and not strip_next and source.startswith("\n", pos):
            pos += 1  # trim_blocks: the newline after a block tag goes
        items.append(("out" if kind == "{" else "stmt", tokens))


def _tokens(source: str, pos: int):
    tokens = []
    while True:
        match = _TOKEN.match(source, pos)
        if not match:
            raise TemplateError(f"chat_template: cannot read {source[pos:pos + 20]!r} at character {pos}.")
        pos = match.end()
        if match.group("end"):
            return tokens, pos, match.group("end")
        kind = match.lastgroup
        value = match.group(kind)
        if kind == "str":
            value = re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), "\\" + m.group(1)), value[1:-1])
        tokens.append((kind, int(value) if kind == "num" else value))


# ---- statements --------------------------------------------------------------------------------

def _block(items, i, ends):
    """Nodes from items[i] up to a statement whose keyword is in `ends`; returns (nodes, index)."""
    nodes = []
    while i < len(items):
        kind, value = items[i]
        if kind == "text":
            nodes.append(("text", value))
        elif kind == "out":
            nodes.append(("out", _Expr(value).parse_all()))
        else:
            word = value[0][1] if value else ""
            if word in ends:
                return nodes, i
            if word == "for":
                if len(value) < 4 or value[1][0] != "name" or value[2] != ("name", "in"):
                    raise TemplateError("chat_template: for needs the form {% for name in expr %}.")
                body, i = _block(items, i + 1, ("endfor",))
                nodes.append(("for", value[1][1], _Expr(value[3:]).parse_all(), body))
            elif word == "if":
                branches, orelse = [], []
                cond = _Expr(value[1:]).parse_all()
                while True:
                    body, i = _block(items, i + 1, ("elif", "else", "endif"))
                    branches.append((cond, body))
                    word = items[i][1][0][1]
                    if word == "elif":
                        cond = _Expr(items[i][1][1:]).parse_all()
                        continue
                    if word == "else":
                        orelse, i = _block(items, i + 1, ("endif",))
                    break
                nodes.append(("if", branches, orelse))
            elif word == "set" and len(value) > 3 and value[2] == ("op", "="):
                nodes.append(("set", value[1][1], _Expr(value[3:]).parse_all()))
            else:
                raise TemplateError(f"chat_template: the statement {{% {word} %}} is not supported by edgellm's "
                                    "renderer (for, if, set are).")
        i += 1
    if ends:
        raise TemplateError(f"chat_template: missing {{% {ends[-1]} %}}.")
    return nodes, i


class _Output:
    """The rendered pieces, and a bound on the work: a hostile template (loops nested in loops)
    ends with TemplateError instead of running for hours or filling memory."""

    def __init__(self):
        self.pieces, self.steps, self.chars = [], 0, 0

    def step(self):
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise TemplateError(f"chat_template: rendering takes more than {MAX_STEPS:,} steps (loops nested in "
                                "loops?).")

    def append(self, text: str):
        self.chars += len(text)
        if self.chars > MAX_CHARS:
            raise TemplateError(f"chat_template: the rendered text is longer than {MAX_CHARS:,} characters.")
        self.pieces.append(text)


def _run(nodes, scope: dict, out: _Output) -> None:
    for node in nodes:
        out.step()
        kind = node[0]
        if kind == "text":
            out.append(node[1])
        elif kind == "out":
            out.append(_str(node[1](scope)))
        elif kind == "set":
            scope[node[1]] = node[2](scope)
        elif kind == "if":
            for cond, body in node[1]:
                if cond(scope):
                    _run(body, scope, out)
                    break
            else:
                _run(node[2], scope, out)
        else:  # for: the loop's names live in a copy of the scope, as in Jinja
            values = list(node[2](scope) or [])
            for index, value in enumerate(values):
                loop = {"index0": index, "index": index + 1, "first": index == 0,
                        "last": index == len(values) - 1, "length": len(values)}
                _run(node[3], {**scope, node[1]: value, "loop": loop}, out)
