"""Values shared by the parser and the renderer: the error type and Jinja's undefined."""

from __future__ import annotations


# what one rendering may do: far above any conversation a model's context holds, far below hours
MAX_STEPS = 1_000_000  # statements run, loop bodies included
MAX_CHARS = 10_000_000  # characters of the text, and of any string or list an expression builds


class TemplateError(ValueError):
    """A template edgellm cannot render, or a raise_exception() from the template itself."""


class _Undefined:
    """Jinja's undefined: empty, false, of length 0, iterable as nothing, equal only to itself;
    arithmetic and item lookup on it are errors (TemplateError), as jinja2's UndefinedError."""

    def __bool__(self):
        return False

    def __str__(self):
        return ""

    def __len__(self):
        return 0

    def __iter__(self):
        return iter(())


UNDEFINED = _Undefined()


def to_str(value) -> str:
    return "" if value is UNDEFINED else str(value)


def bounded(value):
    """A string or list built by `~` or `+` within MAX_CHARS (each level of nested loops can
    double one)."""
    if isinstance(value, (str, list, tuple)) and len(value) > MAX_CHARS:
        raise TemplateError(f"chat_template: an expression builds a value longer than {MAX_CHARS:,}.")
    return value
