"""A small subset of Jinja, enough for chat templates, so the runtime needs no template library.

Rendered as transformers renders chat templates (jinja2 with trim_blocks and lstrip_blocks):

- text, `{{ expr }}`, `{# comment #}`, and `-` on either side of a tag to strip whitespace;
- `{% for x in expr %}...{% endfor %}` (with `loop.index`, `index0`, `first`, `last`, `length`),
  `{% if %}...{% elif %}...{% else %}...{% endif %}`, `{% set name = expr %}`;
- expressions: string and integer literals, true/false/none, names, `a.b`, `a['b']`, `a[-1]`,
  `or`, `and`, `not`, `==`, `!=`, `<`, `>`, `<=`, `>=`, `in`, `not in`, `+`, `-`, `~`, unary
  minus, `is [not] defined/none/string`, the filters `trim` and `length`, and
  `raise_exception(message)`.

Anything else (macros, other filters, method calls) is refused with a line naming it, rather
than rendered differently from the other engines. Undefined names are empty, false and of length
0, as in Jinja's default; arithmetic or a lookup on them is an error, as in jinja2. Every error,
whatever the template, is a TemplateError (a ValueError) with one line.

Example:
    >>> render("{% for m in messages %}{{ m['role'] }};{% endfor %}", messages=[{"role": "user"}])
    'user;'
"""

from __future__ import annotations

from edgellm.jinja.values import UNDEFINED, TemplateError
from edgellm.jinja.statements import render

__all__ = ["render", "TemplateError", "UNDEFINED"]
