"""Text files -> cleaned text -> token ids -> train/validation splits -> batches of windows.

Needs only numpy and keras (no TensorFlow), so training also runs under the JAX backend.

Validation is the last `val_fraction` of the characters of each file (nanoGPT's convention for
tinyshakespeare), so validation loss per character compares with character-level models.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from edgellm.tokenizer import Tokenizer

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def clean_text(text: str) -> str:
    """Normalise newlines to \\n and drop control characters other than tab and newline."""
    return _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


def read_texts(paths: list[str | Path]) -> list[str]:
    """Read UTF-8 text files, cleaned, with a clear error for a file that cannot be used."""
    texts = []
    for path in paths:
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as error:
            raise ValueError(f"Cannot read training file {path}: {error.strerror}.") from None
        try:
            texts.append(clean_text(raw.decode("utf-8")))
        except UnicodeDecodeError as error:
            raise ValueError(f"Training file {path} is not UTF-8 (byte offset {error.start}). "
                             "Convert it to UTF-8 first.") from None
    return texts


@dataclass
class Corpus:
    train_ids: np.ndarray  # (n_train,) uint32
    val_ids: np.ndarray  # (n_val,) uint32


def build_corpus(texts: list[str], tokenizer: Tokenizer, val_fraction: float = 0.1) -> Corpus:
    """Tokenize each text, keeping its last `val_fraction` of characters for validation.

    Texts are joined with the end-of-text token, so a window never silently runs across two files.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1). Received: val_fraction={val_fraction}")
    sep = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    train, val = [], []
    for text in texts:
        cut = len(text) - int(len(text) * val_fraction)
        train.extend(tokenizer.encode(text[:cut]) + sep)
        if cut < len(text):
            val.extend(tokenizer.encode(text[cut:]) + sep)
    return Corpus(np.array(train, np.uint32), np.array(val, np.uint32))


class WindowBatches(keras.utils.PyDataset):
    """Batches of random (input, target) windows; each batch depends only on (seed, global step).

    Because each batch is a pure function of its step, a resumed run sees the same batches.
    """

    def __init__(self, ids: np.ndarray, context_length: int, batch_size: int, steps: int, seed: int,
                 **kwargs):
        """`steps` is the number of batches per epoch; `epoch` offsets the batch index."""
        super().__init__(**kwargs)
        needed = context_length + 1
        if len(ids) < needed:
            raise ValueError(f"The training text is too short: {len(ids)} tokens, but one window "
                             f"needs context_length + 1 = {needed}. Add text or lower --context.")
        self.ids, self.context_length, self.batch_size = ids, context_length, batch_size
        self.steps, self.seed, self.epoch = steps, seed, 0

    def __len__(self):
        return self.steps

    def __getitem__(self, index):
        rng = np.random.default_rng((self.seed, self.epoch * self.steps + index))
        starts = rng.integers(0, len(self.ids) - self.context_length, size=self.batch_size)
        windows = np.stack([self.ids[s : s + self.context_length + 1] for s in starts]).astype(np.int32)
        return windows[:, :-1], windows[:, 1:]  # (batch, context) each


def validation_windows(ids: np.ndarray, context_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping windows that together predict every validation token after the first."""
    n = (len(ids) - 1) // context_length
    if n == 0:
        raise ValueError(f"The validation text is too short: {len(ids)} tokens, but one window "
                         f"needs {context_length + 1}. Add text, raise --val-fraction or lower --context.")
    x = np.stack([ids[i * context_length : (i + 1) * context_length] for i in range(n)])
    y = np.stack([ids[i * context_length + 1 : (i + 1) * context_length + 1] for i in range(n)])
    return x.astype(np.int32), y.astype(np.int32)
