"""Learning byte-level BPE merges from text: the training half of tokenizer.py.

The text is cut into chunks with GPT-2's pattern and each distinct chunk is counted once. Then,
again and again, the most frequent pair of adjacent ids becomes a new id; only the chunks that
hold that pair are re-merged and their pair counts updated, and a heap finds the next pair.

Example:
    >>> from edgellm.tokenizer.training import train
    >>> tok = train(["the cat sat on the mat"] * 4, vocab_size=265)
    >>> tok.vocab_size, tok.encode(" the mat")
    (265, [263, 260, 256])
"""

from __future__ import annotations

import heapq
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence

from edgellm.text import read_text
from edgellm.tokenizer import DEFAULT_SPECIAL_TOKENS, SPLIT_PATTERN, Tokenizer, TokenizerError

Progress = Callable[[Sequence, str], Iterable]  # progress(items, label) -> the same items, reported


def train(texts: Iterable[str], vocab_size: int, special_tokens: Iterable[str] = DEFAULT_SPECIAL_TOKENS,
          min_frequency: int = 2, progress: Progress | None = None) -> Tokenizer:
    """Learn a tokenizer from strings; see `Tokenizer.train`."""
    special_tokens = _check_options(vocab_size, special_tokens, min_frequency)
    chunk_counts: Counter[str] = Counter()
    for text in [texts] if isinstance(texts, str) else texts:
        if not isinstance(text, str):
            raise TokenizerError(f"Training texts must be str. Received: {type(text).__name__}")
        chunk_counts.update(SPLIT_PATTERN.findall(text))
    return _train_on_counts(chunk_counts, vocab_size, special_tokens, min_frequency, progress)


def train_from_files(paths: Iterable[str | os.PathLike], vocab_size: int,
                     special_tokens: Iterable[str] = DEFAULT_SPECIAL_TOKENS, min_frequency: int = 2,
                     progress: Progress | None = None) -> Tokenizer:
    """Learn a tokenizer from UTF-8 text files, each one text; see `Tokenizer.train_from_files`."""
    special_tokens = _check_options(vocab_size, special_tokens, min_frequency)
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not paths:
        raise TokenizerError("Training needs at least one text file. Received: no files")
    chunk_counts: Counter[str] = Counter()
    for path in (progress or _quiet)(paths, "reading"):
        chunk_counts.update(SPLIT_PATTERN.findall(read_text_file(path)))
    return _train_on_counts(chunk_counts, vocab_size, special_tokens, min_frequency, progress)


def read_text_file(path: str | os.PathLike) -> str:
    """A training file's text, cleaned as training and evaluation clean it (edgellm.text), or a
    TokenizerError naming the file."""
    try:
        return read_text(path, "Training file")
    except ValueError as error:
        raise TokenizerError(str(error)) from None


def _check_options(vocab_size: int, special_tokens: Iterable[str], min_frequency: int) -> list[str]:
    special_tokens = [special_tokens] if isinstance(special_tokens, str) else list(special_tokens)
    if not all(isinstance(t, str) and t for t in special_tokens) or len(set(special_tokens)) != len(special_tokens):
        raise TokenizerError(f"Special tokens must be distinct non-empty strings. Received: {special_tokens!r}")
    if not isinstance(vocab_size, int) or vocab_size < 256 + len(special_tokens):
        raise TokenizerError(f"vocab_size must be at least 256 + {len(special_tokens)} special token(s) = "
                             f"{256 + len(special_tokens)}. Received: vocab_size={vocab_size}")
    if not isinstance(min_frequency, int) or min_frequency < 1:
        raise TokenizerError(f"min_frequency must be an integer of at least 1. Received: min_frequency={min_frequency}")
    return special_tokens


def _train_on_counts(chunk_counts: Counter[str], vocab_size: int, special_tokens: list[str], min_frequency: int,
                     progress: Progress | None) -> Tokenizer:
    words = [list(chunk.encode("utf-8")) for chunk in chunk_counts]  # ids start as the bytes
    freqs = list(chunk_counts.values())
    pair_counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)  # pair -> words that may hold it
    for w, word in enumerate(words):
        for pair in zip(word, word[1:]):
            pair_counts[pair] += freqs[w]
            where[pair].add(w)
    # ties go to the smallest pair of ids, which makes training deterministic
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)

    vocab = [bytes([b]) for b in range(256)]
    merges: list[tuple[int, int]] = []
    for _ in (progress or _quiet)(range(vocab_size - 256 - len(special_tokens)), "merging"):
        while heap and -heap[0][0] != pair_counts.get(heap[0][1], 0):
            heapq.heappop(heap)  # a count that changed since it was pushed
        if not heap or -heap[0][0] < min_frequency:
            break
        pair = heapq.heappop(heap)[1]
        new_id = len(vocab)
        vocab.append(vocab[pair[0]] + vocab[pair[1]])
        merges.append(pair)
        changed: set[tuple[int, int]] = set()
        for w in where.pop(pair):
            word, freq = words[w], freqs[w]
            merged = _merge(word, pair, new_id)
            if len(merged) == len(word):
                continue
            for old in zip(word, word[1:]):
                pair_counts[old] -= freq
                changed.add(old)
            for new in zip(merged, merged[1:]):
                pair_counts[new] += freq
                where[new].add(w)
                changed.add(new)
            words[w] = merged
        del pair_counts[pair]
        for p in changed:
            if p != pair and pair_counts[p] > 0:
                heapq.heappush(heap, (-pair_counts[p], p))
    specials = {text: len(vocab) + n for n, text in enumerate(special_tokens)}
    return Tokenizer(vocab + [t.encode("utf-8") for t in special_tokens], merges, specials)


def _merge(word: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """`word` with every occurrence of `pair`, left to right, replaced by `new_id`."""
    out, i, n = [], 0, len(word)
    while i < n:
        if i < n - 1 and word[i] == pair[0] and word[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def _quiet(items: Sequence, label: str) -> Sequence:
    return items
