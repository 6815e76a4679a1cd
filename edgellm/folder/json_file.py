"""The JSON edgellm reads: model folders (config.json, generation_config.json), tokenizer.json,
checkpoints (checkpoint.json), JSONL example lines and the server's request bodies.

Everything goes through `parse` (text that is not UTF-8 JSON, or nested too deeply to read) and,
for files holding one object, `read_object`, whose `JsonObject` reads each field with its type
checked. Every error is one ValueError naming the file and the field, what was received and
what to do:

    models/x/config.json: edgellm.special_tokens must be an object. Received:
    edgellm.special_tokens=null. Re-export the model folder with `edgellm export`.

Example:
    >>> doc = read_object("models/shakespeare/config.json", "Re-export the model folder.")
    >>> doc.section("edgellm").section("architecture").get("num_layers", int)
    4
"""

from __future__ import annotations

import json
from pathlib import Path

REQUIRED = object()  # `get`'s default: the field must be present
_KINDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "an object",
          list: "a list", type(None): "null"}


def parse(text: str | bytes, source: str, error: type[ValueError] = ValueError):
    """JSON text (or UTF-8 bytes) -> its Python value; `error` naming `source` otherwise."""
    try:  # bytes are UTF-8 (a BOM allowed), never UTF-16 or UTF-32 as json.loads would guess
        return json.loads(text.decode("utf-8-sig") if isinstance(text, bytes) else text)
    except UnicodeDecodeError as cause:
        raise error(f"{source} is not UTF-8 (byte offset {cause.start}).") from None
    except json.JSONDecodeError as cause:
        raise error(f"{source} is not valid JSON ({cause.msg}: line {cause.lineno}, column {cause.colno}).") \
            from None
    except RecursionError:
        raise error(f"{source} is nested too deeply to read.") from None


def read_object(path: str | Path, fix: str, error: type[ValueError] = ValueError) -> "JsonObject":
    """Read a file holding one JSON object.

    Args:
        path: the file.
        fix: what the user should do when the file is bad, appended to every message
            ("Re-export the model folder.").
        error: the ValueError subclass to raise.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise error(f"{path} is missing. {fix}") from None
    except OSError as cause:
        raise error(f"Cannot read {path}: {cause.strerror or cause}. {fix}") from None
    try:
        doc = parse(data, str(path), error)
    except ValueError as cause:
        raise error(f"{cause} {fix}") from None
    if not isinstance(doc, dict):
        raise error(f"{path} must hold a JSON object. Received: {_kind_of(doc)}. {fix}")
    return JsonObject(doc, str(path), fix, error=error)


class JsonObject:
    """One JSON object of a file, read field by field with the types checked.

    Args:
        doc: the parsed object.
        source: the file, named in errors.
        fix: what to do about a bad field, appended to every message.
        prefix: where this object sits in the file ("onnx." for a section).
    """

    def __init__(self, doc: dict, source: str, fix: str = "", prefix: str = "", error: type[ValueError] = ValueError):
        self.doc, self.source, self.fix, self.prefix, self._error = doc, source, fix, prefix, error

    def get(self, key: str, kind, default=REQUIRED):
        """The field `key`, which must be of `kind` (a type or a tuple of types; int excludes
        true and false, float accepts integers and gives a float); `default` when it is absent."""
        if key not in self.doc:
            if default is REQUIRED:
                raise self.error(key, "is missing")
            return default
        value = self.doc[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not any(_is(value, k) for k in kinds):
            raise self.error(key, "must be " + " or ".join(_KINDS.get(k, k.__name__) for k in kinds), value)
        return float(value) if float in kinds and type(value) is int else value

    def section(self, key: str, default=REQUIRED) -> "JsonObject":
        """The object under `key`, read the same way (`default`: a dict used when it is absent)."""
        doc = self.get(key, dict, default)
        return JsonObject(doc, self.source, self.fix, f"{self.prefix}{key}.", self._error)

    def build(self, key: str, make, *args):
        """`make(*args)` (a constructor that checks its arguments), its ValueError or TypeError
        named after the field `key` and the file."""
        try:
            return make(*args)
        except (TypeError, ValueError) as cause:
            reason = str(cause).rstrip(".")
            raise self._error(f"{self.source}: {self.prefix}{key}: {reason}. {self.fix}".rstrip()) from None

    def error(self, key: str, rule: str, value=REQUIRED, fix: str | None = None) -> ValueError:
        """The error for field `key` breaking `rule` ("must be at least 1"), naming what was received;
        `fix` replaces the object's advice."""
        name = self.prefix + key
        received = "" if value is REQUIRED else f" Received: {name}={_short(value)}."
        return self._error(f"{self.source}: {name} {rule}.{received} {self.fix if fix is None else fix}".rstrip())


def _is(value, kind) -> bool:
    if kind is int:
        return type(value) is int
    if kind is float:
        return type(value) in (int, float)
    return isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))


def _kind_of(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true or false", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _short(value) -> str:
    text = json.dumps(value, ensure_ascii=True) if isinstance(value, (dict, list, str, type(None), bool)) \
        else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
