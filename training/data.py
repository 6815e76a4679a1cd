"""Text files -> cleaned text -> token ids on disk -> train/validation splits -> batches of windows.

Needs only numpy and keras (no TensorFlow), so training also runs under the JAX backend.

- Cleaning: newlines normalised to \\n, control characters other than tab and newline dropped
  (edgellm/text.py: `edgellm eval` and `edgellm tokenizer train` read files the same way).
- Split: the last `val_fraction` of the characters of each file is validation (nanoGPT's convention
  for tinyshakespeare), so validation loss per character compares with character-level models.
- Storage: ids are written once to `CACHE/tokens/FINGERPRINT/{train,val}.bin` (uint16, or uint32
  for vocabularies over 65536) and read back as memory maps; the fingerprint hashes
  tokenizer.json, the cleaned text of each file and the split, so any change tokenizes again.
- Batches: random windows of context + 1 tokens; batch i is a pure function of (seed, i), so a
  resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from edgellm.text import read_text
from edgellm.tokenizer import Tokenizer

CACHE_VERSION = "edgellm-tokens-1"  # bump when cleaning or the file layout changes


def read_texts(paths: list[str | Path]) -> list[str]:
    """Read UTF-8 text files, cleaned (edgellm.text: the rule evaluation and the tokenizer trainer
    share), with a clear error for a file that cannot be used."""
    if not paths:
        raise ValueError("No training files. Received: []. Pass one or more UTF-8 text files.")
    texts = [read_text(path, "Training file") for path in paths]
    if not any(texts):
        raise ValueError(f"The training files hold no text after cleaning. Received: "
                         f"{[str(p) for p in paths]}. Pass files with text in them.")
    return texts


def split_text(text: str, val_fraction: float) -> tuple[str, str]:
    cut = len(text) - int(len(text) * val_fraction)
    return text[:cut], text[cut:]


def default_cache_dir() -> Path:
    if os.environ.get("EDGELLM_CACHE"):
        return Path(os.environ["EDGELLM_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgellm"


def _digest(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part.encode("utf-8", "surrogatepass")).digest())
    return h.hexdigest()


def train_tokenizer(texts: list[str], vocab_size: int, val_fraction: float,
                    cache_dir: Path | None) -> Tokenizer:
    """Byte-level BPE learned on the training part of `texts`, cached by (texts, vocab_size)."""
    key = _digest(CACHE_VERSION, "tokenizer", str(vocab_size), str(val_fraction), *texts)[:32]
    path = None if cache_dir is None else Path(cache_dir) / "tokenizers" / f"{key}.json"
    if path is not None and path.is_file():
        return Tokenizer.load(path)
    tokenizer = Tokenizer.train([split_text(t, val_fraction)[0] for t in texts], vocab_size)
    if path is not None and _writable(path.parent):
        tokenizer.save(path)
    return tokenizer


@dataclass
class TokenIds:
    train: np.ndarray  # (n_train,) uint16 or uint32, a memory map when cached
    val: np.ndarray  # (n_val,)
    fingerprint: str


def tokenize(texts: list[str], tokenizer: Tokenizer, val_fraction: float = 0.1,
             cache_dir: Path | None = None) -> TokenIds:
    """Tokenize each text once, keeping its last `val_fraction` of characters for validation.

    Texts are joined with the end-of-text token, so a window never silently runs across two files.
    With `cache_dir`, ids are stored there and later calls with the same tokenizer, texts and
    split map the stored files instead of tokenizing again.

    Example:
        >>> ids = tokenize(["To be, or not to be"], Tokenizer.train(["to be"], 260), 0.25)
        >>> ids.train.dtype, len(ids.val) > 0
        (dtype('uint16'), True)
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1). Received: val_fraction={val_fraction}")
    tokenizer_doc = json.dumps(tokenizer.to_json(), sort_keys=True, ensure_ascii=False)
    fingerprint = _digest(CACHE_VERSION, tokenizer_doc, repr(val_fraction), *texts)
    folder = None if cache_dir is None else Path(cache_dir) / "tokens" / fingerprint[:32]
    if folder is not None and (folder / "meta.json").is_file():
        return _open(folder, fingerprint)

    dtype = np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32
    sep = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    train, val = [], []
    for text in texts:
        head, tail = split_text(text, val_fraction)
        train.append(np.array(tokenizer.encode(head) + sep, dtype))
        if tail:
            val.append(np.array(tokenizer.encode(tail) + sep, dtype))
    ids = TokenIds(np.concatenate(train), np.concatenate(val) if val else np.zeros(0, dtype), fingerprint)
    if folder is not None and _writable(folder.parent):
        _store(folder, ids)
        return _open(folder, fingerprint)
    return ids


@dataclass
class Corpus:
    train_ids: np.ndarray  # (n_train,)
    val_ids: np.ndarray  # (n_val,)


def build_corpus(texts: list[str], tokenizer: Tokenizer, val_fraction: float = 0.1) -> Corpus:
    """The ids of `tokenize`, in memory and without a cache (for a quick look at held-out text)."""
    ids = tokenize(texts, tokenizer, val_fraction)
    return Corpus(ids.train, ids.val)


def _store(folder: Path, ids: TokenIds) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        ids.train.tofile(tmp / "train.bin")
        ids.val.tofile(tmp / "val.bin")
        meta = {"format": CACHE_VERSION, "dtype": ids.train.dtype.name, "fingerprint": ids.fingerprint,
                "train_tokens": len(ids.train), "val_tokens": len(ids.val)}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        os.replace(tmp, folder)  # atomic; fails if another run stored the same ids first
    except OSError:
        pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _open(folder: Path, fingerprint: str) -> TokenIds:
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["fingerprint"] == fingerprint, f"cache folder {folder} holds other ids"

    def load(name, n):
        if n == 0:
            return np.zeros(0, meta["dtype"])
        return np.memmap(folder / name, dtype=meta["dtype"], mode="r", shape=(n,))

    return TokenIds(load("train.bin", meta["train_tokens"]), load("val.bin", meta["val_tokens"]), fingerprint)


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return os.access(folder, os.W_OK)
    except OSError:
        return False


class WindowBatches(keras.utils.PyDataset):
    """`length` batches of random (input, target) windows, starting at global batch `start`.

    Batch i is drawn from (seed, start + i) only, so batches do not depend on how a run was split
    into calls to `fit`, nor on interruptions.
    """

    def __init__(self, ids: np.ndarray, context_length: int, batch_size: int, seed: int,
                 start: int = 0, length: int = 1, **kwargs):
        super().__init__(**kwargs)
        needed = context_length + 1
        if len(ids) < needed:
            raise ValueError(f"The training text is too short: {len(ids)} tokens, but one batch "
                             f"needs at least context + 1 = {needed} tokens (it draws {batch_size} "
                             "random windows of that size). Add text or lower --context.")
        self.ids, self.context_length, self.batch_size = ids, context_length, batch_size
        self.seed, self.start, self.length = seed, start, length

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        rng = np.random.default_rng((self.seed, self.start + index))
        starts = rng.integers(0, len(self.ids) - self.context_length, size=self.batch_size)
        windows = np.stack([self.ids[s : s + self.context_length + 1] for s in starts]).astype(np.int32)
        return windows[:, :-1], windows[:, 1:]  # (batch, context) each


def validation_windows(ids: np.ndarray, context_length: int,
                       max_tokens: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping windows that together predict every validation token after the first.

    With `max_tokens`, only about that many target tokens are kept, in windows spread evenly over
    the whole split (so every file's validation part is represented).
    """
    n = (len(ids) - 1) // context_length
    if n <= 0:
        raise ValueError(f"The validation text is too short: {len(ids)} tokens, but one window "
                         f"needs {context_length + 1}. Add text, raise --val-fraction or lower --context.")
    chosen = np.arange(n)
    if max_tokens:
        chosen = np.unique(np.linspace(0, n - 1, max(1, min(n, max_tokens // context_length))).round())
    starts = chosen.astype(np.int64) * context_length
    x = np.stack([ids[s : s + context_length] for s in starts])  # (windows, context)
    y = np.stack([ids[s + 1 : s + context_length + 1] for s in starts])
    return x.astype(np.int32), y.astype(np.int32)
