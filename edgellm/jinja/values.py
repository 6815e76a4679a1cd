"""Values shared by the parser and the renderer: the error type and Jinja's undefined."""

from __future__ import annotations


class TemplateError(ValueError):
    """A template edgellm cannot render, or a raise_exception() from the template itself."""


class _Undefined:
    def __bool__(self):
        return False

    def __str__(self):
        return ""


UNDEFINED = _Undefined()


def to_str(value) -> str:
    return "" if value is UNDEFINED else str(value)
