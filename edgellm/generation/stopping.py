"""The text of one generated sequence as it grows: whole UTF-8 characters, stop strings.

A stop string can span several tokens ("\\n\\n" from "\\n" then "\\n", or one token ending in
"EN" and the next starting with "D:"), so it is searched in the decoded text, not in the ids.
While streaming, text that might be the start of a stop string is held back until the next
tokens show whether it is; the stop string itself is never emitted.

Example:
    >>> from edgellm.tokenizer import Tokenizer
    >>> tok = Tokenizer([bytes([b]) for b in range(256)])  # one id per byte
    >>> text = TextTracker(tok, stop_strings=("lo w",))
    >>> "".join(text.take() for b in b"hello world" if not text.push(b))
    'hel'
    >>> text.stopped, text.text
    (True, 'hel')
"""

from __future__ import annotations

import copy

from edgellm.tokenizer import Tokenizer


class TextTracker:
    """Decodes ids one at a time and finds stop strings across token boundaries.

    Args:
        tokenizer: the model's tokenizer.
        stop_strings: strings that end generation.
    """

    def __init__(self, tokenizer: Tokenizer, stop_strings: tuple[str, ...] = ()):
        self._decoder = tokenizer.stream_decoder()
        self._stops = stop_strings
        self._longest = max((len(s) for s in stop_strings), default=0)
        self._pieces: list[str] = []
        self._length = 0  # characters decoded so far
        self._emitted = 0  # characters handed out by take()
        self._text: str | None = ""  # joined lazily
        self.stopped = False  # a stop string was found; text ends just before it
        self._finished = False

    @property
    def text(self) -> str:
        """The decoded text so far (cut before the stop string once one is found)."""
        if self._text is None:
            self._text = "".join(self._pieces)
            self._pieces = [self._text]
        return self._text

    def push(self, token_id: int) -> bool:
        """Add one generated id; returns True when the text now contains a stop string."""
        piece = self._decoder.push(token_id)
        if not piece or self.stopped:
            return self.stopped
        self._pieces.append(piece)
        self._length += len(piece)
        self._text = None
        if self._stops:
            # only a stop string ending inside the new piece can be new
            start = max(0, self._length - len(piece) - self._longest + 1)
            tail = self.text[start:]
            found = [i for i in (tail.find(s) for s in self._stops) if i >= 0]
            if found:
                self._text = self.text[: start + min(found)]
                self._pieces, self._length = [self._text], len(self._text)
                self.stopped = True
        return self.stopped

    def fork(self) -> "TextTracker":
        """An independent copy that continues from here (a beam and its candidates)."""
        twin = copy.copy(self)
        twin._decoder = self._decoder.copy()
        twin._pieces = list(self._pieces)
        return twin

    def finish(self) -> None:
        """No more ids: the decoder's last bytes become text (U+FFFD if they were cut)."""
        if not self.stopped:
            piece = self._decoder.flush()
            if piece:
                self._pieces.append(piece)
                self._length += len(piece)
                self._text = None
        self._finished = True  # nothing can still grow into a stop string

    def take(self) -> str:
        """Text not handed out yet that cannot turn out to be the start of a stop string."""
        end = self._length
        if not self.stopped and not self._finished and self._longest:
            end -= self._held_back()
        if end <= self._emitted:
            return ""
        out = self.text[self._emitted:end]
        self._emitted = end
        return out

    def _held_back(self) -> int:
        """Length of the longest suffix of the text that is a proper prefix of a stop string."""
        tail = self.text[-(self._longest - 1):] if self._longest > 1 else ""
        for size in range(len(tail), 0, -1):
            suffix = tail[-size:]
            if any(s.startswith(suffix) for s in self._stops):
                return size
        return 0
