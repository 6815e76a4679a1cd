"""Byte-level BPE tokenizer, shared by training and the runtime.

Text is split into chunks with GPT-2's pattern, each chunk's UTF-8 bytes are
merged by learned byte-pair merges, and ids map 1:1 to tokens. The file format
is Hugging Face `tokenizers`' tokenizer.json (BPE model, ByteLevel
pre-tokenizer and decoder), so either library can read what the other wrote.

Ids: 0-255 are the raw bytes, 256.. are merges in the order learned, and the
special tokens come last.

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
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

import regex

# GPT-2's pre-tokenization pattern, as Hugging Face's ByteLevel pre-tokenizer uses it.
SPLIT_PATTERN = regex.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)
DEFAULT_SPECIAL_TOKENS = ("<|endoftext|>",)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from each byte to a printable unicode character."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = dict(zip(printable, printable))
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = 256 + extra
            extra += 1
    return {b: chr(c) for b, c in sorted(chars.items())}


BYTE_TO_CHAR = bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}


class TokenizerError(ValueError):
    """A tokenizer file or argument that edgellm cannot use."""


class Tokenizer:
    """Byte-level BPE: `merges` maps a pair of ids to the id of their merge."""

    def __init__(self, merges: dict[tuple[int, int], int], special_tokens: Iterable[str] = ()):
        self.merges = dict(merges)
        # id -> bytes, for decoding
        self.token_bytes: list[bytes] = [bytes([b]) for b in range(256)]
        for (a, b), new_id in sorted(self.merges.items(), key=lambda kv: kv[1]):
            assert new_id == len(self.token_bytes), "merge ids must be consecutive from 256"
            self.token_bytes.append(self.token_bytes[a] + self.token_bytes[b])
        self.special_tokens: dict[str, int] = {}
        for token in special_tokens:
            self.special_tokens[token] = len(self.token_bytes)
            self.token_bytes.append(token.encode("utf-8"))
        self._special_pattern = (
            regex.compile("(" + "|".join(regex.escape(t) for t in self.special_tokens) + ")")
            if self.special_tokens
            else None
        )
        self._cache: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        return len(self.token_bytes)

    @property
    def eos_token_id(self) -> int | None:
        return self.special_tokens.get("<|endoftext|>")

    # ---- training -------------------------------------------------------------------------

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        special_tokens: Iterable[str] = DEFAULT_SPECIAL_TOKENS,
        min_frequency: int = 2,
    ) -> "Tokenizer":
        """Learn merges until the vocabulary (bytes + merges + specials) has `vocab_size` ids.

        Deterministic: among pairs of equal count, the smallest pair of ids is merged first.

        Args:
            texts: strings to learn from (a corpus can be passed as one string per file).
            vocab_size: total number of ids, at least 256 + the number of special tokens.
            special_tokens: strings that get their own id and are never merged.
            min_frequency: pairs seen fewer times than this are never merged; training may stop
                below vocab_size because of it.
        """
        special_tokens = list(special_tokens)
        if vocab_size < 256 + len(special_tokens):
            raise TokenizerError(
                f"vocab_size must be at least 256 + {len(special_tokens)} special tokens. "
                f"Received: vocab_size={vocab_size}"
            )
        chunk_counts: Counter[str] = Counter()
        for text in texts:
            chunk_counts.update(SPLIT_PATTERN.findall(text))
        words = [list(chunk.encode("utf-8")) for chunk in chunk_counts]
        freqs = list(chunk_counts.values())

        pair_counts: dict[tuple[int, int], int] = defaultdict(int)
        where: dict[tuple[int, int], set[int]] = defaultdict(set)
        for w, (word, freq) in enumerate(zip(words, freqs)):
            for pair in zip(word, word[1:]):
                pair_counts[pair] += freq
                where[pair].add(w)
        heap = [(-count, pair) for pair, count in pair_counts.items()]
        heapq.heapify(heap)

        merges: dict[tuple[int, int], int] = {}
        n_merges = vocab_size - 256 - len(special_tokens)
        while len(merges) < n_merges and heap:
            neg_count, pair = heapq.heappop(heap)
            if pair_counts.get(pair, 0) != -neg_count:
                continue  # stale heap entry
            if -neg_count < min_frequency:
                break
            new_id = 256 + len(merges)
            merges[pair] = new_id
            changed: set[tuple[int, int]] = set()
            for w in where.pop(pair):
                word, freq = words[w], freqs[w]
                for old in zip(word, word[1:]):
                    pair_counts[old] -= freq
                    changed.add(old)
                word = _merge(word, pair, new_id)
                words[w] = word
                for new in zip(word, word[1:]):
                    pair_counts[new] += freq
                    where[new].add(w)
                    changed.add(new)
            pair_counts.pop(pair, None)
            for p in changed:
                if p != pair and pair_counts.get(p, 0) > 0:
                    heapq.heappush(heap, (-pair_counts[p], p))
        return cls(merges, special_tokens)

    # ---- encoding and decoding ------------------------------------------------------------

    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        """Text -> ids. Special-token strings in `text` are plain text unless `allow_special`."""
        if allow_special and self._special_pattern is not None:
            ids: list[int] = []
            for i, part in enumerate(self._special_pattern.split(text)):
                if i % 2:
                    ids.append(self.special_tokens[part])
                elif part:
                    ids.extend(self._encode_ordinary(part))
            return ids
        return self._encode_ordinary(text)

    def _encode_ordinary(self, text: str) -> list[int]:
        ids: list[int] = []
        for chunk in SPLIT_PATTERN.findall(text):
            cached = self._cache.get(chunk)
            if cached is None:
                cached = self._encode_chunk(chunk.encode("utf-8"))
                if len(self._cache) < 100_000:
                    self._cache[chunk] = cached
            ids.extend(cached)
        return ids

    def _encode_chunk(self, data: bytes) -> list[int]:
        word = list(data)
        while len(word) >= 2:
            # the pair merged earliest in training goes first
            pair = min(zip(word, word[1:]), key=lambda p: self.merges.get(p, 1 << 30))
            if pair not in self.merges:
                break
            word = _merge(word, pair, self.merges[pair])
        return word

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text. Byte sequences that are not valid UTF-8 become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        n = len(self.token_bytes)
        try:
            return b"".join(self.token_bytes[i] for i in ids if 0 <= i < n or _bad_id(i, n))
        except TypeError as error:
            raise TokenizerError(f"ids must be integers. {error}") from None

    def stream_decoder(self) -> "StreamDecoder":
        """A decoder fed one id at a time that only emits whole UTF-8 characters."""
        return StreamDecoder(self)

    # ---- tokenizer.json -------------------------------------------------------------------

    def to_json(self) -> dict:
        """This tokenizer as a Hugging Face tokenizer.json document."""
        as_str = ["".join(BYTE_TO_CHAR[b] for b in tb) for tb in self.token_bytes[: 256 + len(self.merges)]]
        merges = sorted(self.merges.items(), key=lambda kv: kv[1])
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": [
                {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                 "normalized": False, "special": True}
                for t, i in self.special_tokens.items()
            ],
            "normalizer": None,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                              "use_regex": True},
            "post_processor": None,
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                        "use_regex": True},
            "model": {
                "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                "ignore_merges": False,
                "vocab": {s: i for i, s in enumerate(as_str)},
                "merges": [[as_str[a], as_str[b]] for (a, b), _ in merges],
            },
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write tokenizer.json atomically."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Tokenizer":
        """Read a byte-level BPE tokenizer.json (written by edgellm or by Hugging Face)."""
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise TokenizerError(f"Tokenizer file not found. Received: {path}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise TokenizerError(f"Cannot read tokenizer file {path}: {error}") from None
        return cls.from_json(doc, source=str(path))

    @classmethod
    def from_json(cls, doc: dict, source: str = "tokenizer.json") -> "Tokenizer":
        model = doc.get("model") if isinstance(doc, dict) else None
        if not isinstance(model, dict) or model.get("type") != "BPE":
            raise TokenizerError(f"{source}: only BPE models are supported. Received: model type "
                                 f"{model.get('type') if isinstance(model, dict) else None!r}")
        pre = doc.get("pre_tokenizer") or {}
        if pre.get("type") != "ByteLevel":
            raise TokenizerError(f"{source}: only the ByteLevel pre-tokenizer is supported. "
                                 f"Received: {pre.get('type')!r}")
        vocab: dict[str, int] = model["vocab"]
        to_bytes = {s: bytes(CHAR_TO_BYTE[c] for c in s) for s in vocab}
        byte_ids = {to_bytes[s]: i for s, i in vocab.items() if len(to_bytes[s]) == 1}
        if len(byte_ids) != 256:
            raise TokenizerError(f"{source}: the vocabulary must hold all 256 bytes.")
        # edgellm's ids are bytes first, then merges in order: remap when a file orders them otherwise
        order = list(range(256))
        ours = {byte_ids[bytes([b])]: b for b in range(256)}
        merges: dict[tuple[int, int], int] = {}
        for m in model["merges"]:
            left, right = m.split(" ") if isinstance(m, str) else m
            a, b = ours[vocab[left]], ours[vocab[right]]
            new_id = 256 + len(merges)
            merges[(a, b)] = new_id
            ours[vocab[left + right]] = new_id
            order.append(vocab[left + right])
        specials = sorted((t["id"], t["content"]) for t in doc.get("added_tokens", []))
        tok = cls(merges, [content for _, content in specials])
        for their_id, content in specials:
            order.append(their_id)
        if order != list(range(len(order))):
            raise TokenizerError(f"{source}: ids must be bytes, then merges in order, then added "
                                 "tokens; this file orders them otherwise.")
        return tok


class StreamDecoder:
    """Feeds ids one by one and returns text only at whole UTF-8 characters."""

    def __init__(self, tokenizer: Tokenizer):
        self._tokenizer = tokenizer
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        return self._decoder.decode(self._tokenizer.decode_bytes([token_id]))

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)


def _merge(word: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    out, i, n = [], 0, len(word)
    while i < n:
        if i < n - 1 and word[i] == pair[0] and word[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def _bad_id(i: int, n: int) -> bool:
    raise TokenizerError(f"Token id out of range: ids must be in [0, {n}). Received: {i}")
