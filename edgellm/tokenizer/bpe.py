"""Byte-level BPE tokenizer, shared by training and the runtime.

Text is cut into chunks with GPT-2's pattern; each chunk's UTF-8 bytes start as one id per byte
and are merged pair by pair, the pair learned earliest first. The tokenizer is an id -> bytes
table plus ranked merges, so any consistent byte-level BPE vocabulary loads with its own ids.
The file format is Hugging Face `tokenizers`' tokenizer.json (BPE model, ByteLevel
pre-tokenizer and decoder; json_format.py), so either library reads what the other wrote.
Training lives in training.py.

With `split_digits` (SmolLM's and StarCoder's tokenizers) every digit is a chunk of its own before
GPT-2's pattern cuts the rest: "In 1995" -> "In", " ", "1", "9", "9", "5".

Special tokens (`<|endoftext|>`) are atoms: never merged, and their text in user input is plain
text unless `encode(..., allow_special=True)`.

Example:
    >>> tok = Tokenizer.train(["to be or not to be"], vocab_size=260)
    >>> tok.decode(tok.encode("to be or not"))
    'to be or not'
"""

from __future__ import annotations

import codecs
import heapq
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import regex

# GPT-2's pre-tokenization pattern, as Hugging Face's ByteLevel pre-tokenizer uses it.
SPLIT_PATTERN = regex.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)
DEFAULT_SPECIAL_TOKENS = ("<|endoftext|>",)
DIGIT = regex.compile(r"(\p{N})")  # Hugging Face's Digits(individual_digits=True), llama.cpp's \p{N} split
CACHE_SIZE = 100_000  # chunks whose ids are remembered; prose repeats its words


class TokenizerError(ValueError):
    """A tokenizer file, text or argument that edgellm cannot use."""


class Tokenizer:
    """Byte-level BPE over an id -> bytes table and ranked merges.

    Args:
        vocab: the bytes of every id, in id order; a special token's entry is its UTF-8 text.
            A byte without an id is skipped when encoding.
        merges: pairs of ids in rank order; each pair's concatenated bytes must be in `vocab`.
        special_tokens: text -> id of the special tokens.
        split_digits: cut every digit into a chunk of its own before GPT-2's pattern.

    Example:
        >>> tok = Tokenizer([bytes([b]) for b in range(256)] + [b"hi", b"<eos>"], [(104, 105)], {"<eos>": 257})
        >>> tok.encode("hi!<eos>", allow_special=True)
        [256, 33, 257]
    """

    def __init__(self, vocab: Sequence[bytes], merges: Iterable[tuple[int, int]] = (),
                 special_tokens: Mapping[str, int] | None = None, split_digits: bool = False):
        self.token_bytes = [bytes(b) for b in vocab]
        self.split_digits = bool(split_digits)
        self.special_tokens = dict(special_tokens or {})
        n = len(self.token_bytes)
        for text, i in self.special_tokens.items():
            if not (0 <= i < n and self.token_bytes[i] == text.encode("utf-8")):
                raise TokenizerError(f"Special token {text!r} must have an id in [0, {n}) whose bytes are its "
                                     f"text. Received: id {i}")
        special_ids = set(self.special_tokens.values())
        id_of = {b: i for i, b in enumerate(self.token_bytes) if i not in special_ids}
        if len(id_of) != n - len(special_ids):
            raise TokenizerError("Two ids have the same bytes. Received: a vocabulary with duplicate entries")
        # a byte without an id (some pretrained vocabularies lack a few control bytes) is skipped
        # when encoding, as Hugging Face's BPE without an unknown token does
        self.byte_ids = [id_of.get(bytes([b])) for b in range(256)]
        self.merges: dict[tuple[int, int], int] = {}  # pair -> merged id, in rank order
        for a, b in merges:
            merged = id_of.get(self.token_bytes[a] + self.token_bytes[b])
            if merged is None:
                raise TokenizerError(f"The merge of ids {a} and {b} must be in the vocabulary. Received: no id "
                                     f"for {self.token_bytes[a] + self.token_bytes[b]!r}")
            self.merges.setdefault((a, b), merged)
        self._ranks = {pair: rank for rank, pair in enumerate(self.merges)}
        # longest first, so that of two specials starting at one place the longer one wins
        longest_first = sorted(self.special_tokens, key=len, reverse=True)
        self._special_pattern = regex.compile("|".join(map(regex.escape, longest_first))) if longest_first else None
        self._cache: dict[str, list[int]] = {}

    def with_special_tokens(self, tokens: Iterable[str]) -> "Tokenizer":
        """This tokenizer with `tokens` added as special tokens (new ids after the last), unless
        already there. Every existing id keeps its meaning, so a model can grow to the new ids."""
        added = [t for t in dict.fromkeys(tokens) if t not in self.special_tokens]
        start = len(self.token_bytes)
        return Tokenizer(self.token_bytes + [t.encode("utf-8") for t in added], list(self.merges),
                         {**self.special_tokens, **{t: start + i for i, t in enumerate(added)}}, self.split_digits)

    @property
    def vocab_size(self) -> int:
        return len(self.token_bytes)

    @property
    def eos_token_id(self) -> int | None:
        return self.special_tokens.get("<|endoftext|>")

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, special_tokens={self.special_tokens})"

    # ---- training (training.py) -------------------------------------------------------------

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, special_tokens: Iterable[str] = DEFAULT_SPECIAL_TOKENS,
              min_frequency: int = 2, progress: Callable | None = None) -> "Tokenizer":
        """Learn a tokenizer of `vocab_size` ids from strings: bytes 0-255, then merges, then specials.

        Deterministic: the most frequent pair is merged first; among equal counts, the smallest
        pair of ids. Special-token text inside `texts` counts as plain text.

        Args:
            texts: strings to learn from (a str is one text).
            vocab_size: total number of ids, at least 256 + the number of special tokens.
            special_tokens: strings that get their own id and are never merged.
            min_frequency: pairs seen fewer times are never merged, so training may stop early.
            progress: `progress(items, label)` wraps the merge loop (e.g. in a progress bar).

        Example:
            >>> tok = Tokenizer.train(["low lower lowest"] * 3, vocab_size=262)
            >>> tok.decode(tok.encode("lowest"))
            'lowest'
        """
        from edgellm.tokenizer.training import train

        return train(texts, vocab_size, special_tokens, min_frequency, progress)

    @classmethod
    def train_from_files(cls, paths: Iterable[str | os.PathLike], vocab_size: int,
                         special_tokens: Iterable[str] = DEFAULT_SPECIAL_TOKENS, min_frequency: int = 2,
                         progress: Callable | None = None) -> "Tokenizer":
        """`train` on UTF-8 text files, each file one text. `progress` wraps the files and the merges.

        Example:
            >>> tok = Tokenizer.train_from_files(["data/tinyshakespeare/input.txt"], vocab_size=512)
        """
        from edgellm.tokenizer.training import train_from_files

        return train_from_files(paths, vocab_size, special_tokens, min_frequency, progress)

    # ---- encoding and decoding ----------------------------------------------------------------

    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        """Text -> ids. Special-token strings in `text` are plain text unless `allow_special`."""
        if not isinstance(text, str):
            raise TokenizerError(f"encode takes a str. Received: {type(text).__name__}")
        try:
            if not (allow_special and self._special_pattern):
                return self._encode_ordinary(text)
            ids, start = [], 0
            for match in self._special_pattern.finditer(text):
                ids += self._encode_ordinary(text[start:match.start()])
                ids.append(self.special_tokens[match.group()])
                start = match.end()
            return ids + self._encode_ordinary(text[start:])
        except UnicodeEncodeError:
            at = regex.search(r"[\ud800-\udfff]", text).start()
            raise TokenizerError(f"Text must be valid Unicode, but holds a lone surrogate, which has no UTF-8 "
                                 f"form. Received: U+{ord(text[at]):04X} at character {at}. Remove it, or "
                                 "decode the source with errors='replace'") from None

    def _encode_ordinary(self, text: str) -> list[int]:
        ids: list[int] = []
        cache = self._cache
        pieces = DIGIT.split(text) if self.split_digits else (text,)
        for chunk in (c for piece in pieces for c in SPLIT_PATTERN.findall(piece)):
            chunk_ids = cache.get(chunk)
            if chunk_ids is None:
                chunk_ids = self._merge_chunk([i for b in chunk.encode("utf-8") if (i := self.byte_ids[b]) is not None])
                if len(cache) < CACHE_SIZE:
                    cache[chunk] = chunk_ids
            ids += chunk_ids
        return ids

    def _merge_chunk(self, ids: list) -> list[int]:
        """Apply merges to one chunk: always the lowest-ranked pair present, leftmost first.

        A heap of (rank, position) over a linked list of the chunk's ids keeps this O(n log n),
        so a 100 kB word costs no more per byte than a short one.
        """
        n, rank_of = len(ids), self._ranks.get
        if n < 2:
            return ids
        after, before = list(range(1, n + 1)), list(range(-1, n - 1))  # linked list over positions
        heap = [(r, i) for i, pair in enumerate(zip(ids, ids[1:])) if (r := rank_of(pair)) is not None]
        heapq.heapify(heap)
        while heap:
            rank, i = heapq.heappop(heap)
            j = after[i]
            if j >= n or ids[i] is None or rank_of((ids[i], ids[j])) != rank:
                continue  # this pair changed since it was pushed
            ids[i], ids[j] = self.merges[ids[i], ids[j]], None
            k = after[i] = after[j]
            if k < n:
                before[k] = i
                if (r := rank_of((ids[i], ids[k]))) is not None:
                    heapq.heappush(heap, (r, i))
            h = before[i]
            if h >= 0 and (r := rank_of((ids[h], ids[i]))) is not None:
                heapq.heappush(heap, (r, h))
        return [t for t in ids if t is not None]

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text. Byte sequences that are not valid UTF-8 become U+FFFD; never raises on valid ids."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Ids -> the raw bytes they stand for (special tokens as their UTF-8 text)."""
        table, n = self.token_bytes, len(self.token_bytes)
        try:
            return b"".join([table[i] if 0 <= i < n else _bad_id(i, n) for i in ids])
        except TypeError:
            raise TokenizerError(f"Token ids must be integers. Received: {list(ids)[:8]!r}") from None

    def stream_decoder(self) -> "StreamDecoder":
        """A decoder fed one id at a time that returns text only at whole UTF-8 characters."""
        return StreamDecoder(self)

    # ---- tokenizer.json -----------------------------------------------------------------------

    def to_json(self) -> dict:
        """This tokenizer as a Hugging Face tokenizer.json document, every id unchanged."""
        from edgellm.tokenizer import json_format as tokenizer_json

        return tokenizer_json.document(self.token_bytes, self.merges, self.special_tokens, self.split_digits)

    def save(self, path: str | os.PathLike) -> None:
        """Write tokenizer.json atomically (a temporary file, then a rename)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(self.to_json(), ensure_ascii=False), encoding="utf-8")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Tokenizer":
        """Read a byte-level BPE tokenizer.json, written by edgellm or by Hugging Face `tokenizers`."""
        from edgellm.folder import json_file

        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            raise TokenizerError(f"Tokenizer file not found. Received: {path}. Pass the path of a "
                                 "tokenizer.json") from None
        except OSError as error:
            raise TokenizerError(f"Cannot read tokenizer file {path}: {error.strerror}. Pass the path of a "
                                 "readable tokenizer.json") from None
        try:
            doc = json_file.parse(data, str(path), TokenizerError)
        except TokenizerError as error:
            raise TokenizerError(f"{error} Re-create it with `edgellm tokenizer train` or Hugging Face "
                                 "tokenizers") from None
        return cls.from_json(doc, source=str(path))

    @classmethod
    def from_json(cls, doc: dict, source: str = "tokenizer.json") -> "Tokenizer":
        """A tokenizer from a parsed tokenizer.json document; `source` names it in errors."""
        from edgellm.tokenizer import json_format as tokenizer_json

        vocab, merges, special_tokens, split_digits = tokenizer_json.parse(doc, source)
        try:
            return cls(vocab, merges, special_tokens, split_digits)
        except TokenizerError as error:
            raise TokenizerError(f"{source}: {error}") from None


class StreamDecoder:
    """Fed ids one by one, returns text only at whole UTF-8 characters.

    The concatenation of every `push` and the final `flush` equals `decode` of all the ids.

    Example:
        >>> decoder = Tokenizer.train(["x"], vocab_size=257).stream_decoder()
        >>> [decoder.push(b) for b in "é".encode()] + [decoder.flush()]
        ['', 'é', '']
    """

    def __init__(self, tokenizer: Tokenizer):
        self._tokenizer = tokenizer
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        return self._decoder.decode(self._tokenizer.decode_bytes([token_id]))

    def copy(self) -> "StreamDecoder":
        """A decoder in the same state (the same bytes of an unfinished character held)."""
        twin = StreamDecoder(self._tokenizer)
        twin._decoder.setstate(self._decoder.getstate())
        return twin

    def flush(self) -> str:
        """The rest: an unfinished character at the end becomes U+FFFD."""
        return self._decoder.decode(b"", final=True)


def _bad_id(i: int, n: int) -> bytes:
    raise TokenizerError(f"Token ids must be in [0, {n}). Received: {i}")
