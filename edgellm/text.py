"""Reading text files, with the one cleaning rule that training, evaluation and the tokenizer
trainer share, so a model is scored on exactly the text it was trained on.

Cleaning: newlines normalised to \\n (\\r\\n and lone \\r), control characters other than tab
and newline dropped (NUL, bell, escape, DEL, ...). Other characters, including Unicode line and
paragraph separators, stay as they are.

Example:
    >>> clean_text("a\\r\\nb\\x07c\\td")
    'a\\nbc\\td'
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def clean_text(text: str) -> str:
    """Normalise newlines to \\n and drop control characters other than tab and newline."""
    return _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


def read_text(path: str | os.PathLike, what: str = "Text file") -> str:
    """The cleaned content of a UTF-8 text file, or a ValueError naming the file.

    Args:
        path: the file.
        what: how the file is named in errors ("Training file", "Evaluation file", ...).

    Example:
        >>> text = read_text("data/tinyshakespeare/input.txt")
        >>> text[:14]
        'First Citizen:'
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"{what} not found. Received: {path}. Pass the path of a UTF-8 text file.") from None
    except OSError as error:
        raise ValueError(f"Cannot read {what.lower()} {path}: {error.strerror}. Pass a readable UTF-8 "
                         "text file.") from None
    try:
        return clean_text(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(f"{what} {path} is not UTF-8 text. Received: byte 0x{raw[error.start]:02x} at byte "
                         f"offset {error.start}. Convert it to UTF-8 (e.g. iconv -t UTF-8).") from None
