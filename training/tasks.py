"""Prompt/completion examples for task models: encoding in the template, masked batches.

Example files are read by `edgellm.tasks.read_examples` (JSONL or TSV, optionally gzipped).

Template: an example is tokenized as

    prompt ids + [<|completion|>] + completion ids + [<|endoftext|>]

and only the completion ids and the closing <|endoftext|> count in the loss. The template lives
in the runtime (edgellm/tasks.py), which applies the same one at generation.

No packing: each example is right-padded to the context length, one example per row. Causal
attention means right padding never changes the real tokens' logits, and padded positions carry
zero loss weight, so no example attends to another one. Every batch has the same shape, which
Keras's input pipeline and XLA need; the price is the compute spent on padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from edgellm.session.batching import fit_context
from edgellm.tasks import END_TOKEN, TASK_SPECIAL_TOKENS, Example, template_ids
from edgellm.tokenizer import Tokenizer

TOO_LONG = ("skip", "error", "right")

def encode_example(tokenizer: Tokenizer, example: Example, context_length: int | None = None) -> tuple[list[int], int]:
    """Token ids of the whole example and the index where the completion starts. With a
    `context_length`, a prompt too long to fit with its completion is cut as the runtime's
    truncate="right" cuts it: its start kept, then the template's <|completion|>."""
    prompt = template_ids(tokenizer, example.prompt)
    completion = tokenizer.encode(example.completion) + [tokenizer.special_tokens[END_TOKEN]]
    if context_length is not None:
        prompt = fit_context(prompt, context_length + 1, len(completion), "right", tail=1)
    return prompt + completion, len(prompt)


def encode_examples(tokenizer: Tokenizer, examples: list[Example], context_length: int,
                    too_long: str = "skip") -> tuple[list[tuple[list[int], int]], int]:
    """Encode examples; those longer than context_length + 1 are skipped (counted), an error, or
    ("right") have their prompt's end cut; skipped even then if the completion takes over half."""
    if too_long not in TOO_LONG:
        raise ValueError(f"too_long must be one of {list(TOO_LONG)}. Received: too_long={too_long!r}")
    for token in TASK_SPECIAL_TOKENS:
        if token not in tokenizer.special_tokens:
            raise ValueError(f"The tokenizer lacks the special token {token}. Train it with "
                             f"special tokens {list(TASK_SPECIAL_TOKENS)}.")
    encoded, skipped = [], 0
    for i, example in enumerate(examples):
        ids, start = encode_example(tokenizer, example, context_length if too_long == "right" else None)
        if len(ids) > context_length + 1:
            if too_long == "error":
                raise ValueError(f"Example {i + 1} is {len(ids)} tokens, more than the context "
                                 f"({context_length}) + 1. Raise --context, or pass --too-long skip or "
                                 "--too-long right.")
            skipped += 1
            continue
        encoded.append((ids, start))
    return encoded, skipped


def masked_batch(encoded: list[tuple[list[int], int]], pad_id: int, length: int, prompt_weight: float = 0.0
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Right-padded (inputs, targets, loss weights), each (batch, length); weight 1 on completion
    targets, `prompt_weight` on the prompt's own next tokens, 0 on padding."""
    x = np.full((len(encoded), length), pad_id, np.int32)
    y = np.full((len(encoded), length), pad_id, np.int32)
    w = np.zeros((len(encoded), length), np.float32)
    for b, (ids, start) in enumerate(encoded):
        n = len(ids) - 1
        x[b, :n], y[b, :n] = ids[:-1], ids[1:]
        w[b, : start - 1] = prompt_weight  # targets inside the prompt (the first id is never a target)
        w[b, start - 1 : n] = 1.0  # target t is ids[t + 1]: completion ids sit at start..n
    return x, y, w


class ExampleBatches(keras.utils.PyDataset):
    """`length` batches of random examples padded to `context`, starting at global batch `start`;
    batch i depends only on (seed, start + i), so a resumed run sees the same batches."""

    def __init__(self, encoded, batch_size: int, seed: int, pad_id: int, context: int, start: int = 0,
                 length: int = 1, prompt_weight: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if not encoded:
            raise ValueError("No examples fit in the context. Raise --context.")
        self.encoded = encoded
        self.batch_size, self.seed, self.pad_id, self.context = batch_size, seed, pad_id, context
        self.prompt_weight = prompt_weight
        self.start, self.length = start, length

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        rng = np.random.default_rng((self.seed, self.start + index))
        rows = rng.integers(0, len(self.encoded), size=self.batch_size)
        return masked_batch([self.encoded[r] for r in rows], self.pad_id, self.context, self.prompt_weight)


def split_examples(examples: list[Example], val_fraction: float) -> tuple[list[Example], list[Example]]:
    """Hold out the last `val_fraction` of the distinct prompts (file order), with all their examples."""
    prompts = list(dict.fromkeys(e.prompt for e in examples))
    held = set(prompts[len(prompts) - int(len(prompts) * val_fraction):]) if val_fraction > 0 else set()
    return [e for e in examples if e.prompt not in held], [e for e in examples if e.prompt in held]


@dataclass
class TaskData:
    train: list[tuple[list[int], int]]  # encoded training examples
    val: tuple[np.ndarray, np.ndarray, np.ndarray]  # (inputs, targets, weights) of held-out examples
    val_chars_per_token: float  # characters per completion token of the held-out examples
    skipped: int  # examples longer than the context


def task_data(examples: list[Example], tokenizer: Tokenizer, context_length: int, val_fraction: float,
              too_long: str = "skip") -> TaskData:
    """Encode, split and batch prompt/completion examples for training."""
    train, val = split_examples(examples, val_fraction)
    train_ids, skipped = encode_examples(tokenizer, train, context_length, too_long)
    val_ids, val_skipped = encode_examples(tokenizer, val, context_length, too_long)
    if not val_ids:
        raise ValueError(f"No held-out examples: val_fraction={val_fraction} of {len(examples)} examples. "
                         "Raise --val-fraction or add examples.")
    x, y, w = masked_batch(val_ids, tokenizer.special_tokens[END_TOKEN], context_length)
    completion_tokens = int(w.sum())
    chars = sum(len(e.completion) for e in val)
    return TaskData(train_ids, (x, y, w), chars / completion_tokens, skipped + val_skipped)


def prepare(path: str, tokenizer: Tokenizer | None, vocab_size: int, context_length: int, val_fraction: float,
            too_long: str = "skip") -> tuple[Tokenizer, TaskData, str]:
    """Examples file -> (tokenizer, task data, fingerprint of tokenizer + examples + split).

    The tokenizer, when not given, is learned from the training examples with the task's special
    tokens.
    """
    import hashlib
    import json

    from edgellm.tasks import read_examples

    examples = read_examples(path)
    if tokenizer is None:
        train = split_examples(examples, val_fraction)[0]
        tokenizer = Tokenizer.train([e.prompt + e.completion for e in train], vocab_size, TASK_SPECIAL_TOKENS)
    task = task_data(examples, tokenizer, context_length, val_fraction, too_long)
    h = hashlib.sha256(json.dumps(tokenizer.to_json(), sort_keys=True).encode() + repr(val_fraction).encode())
    for e in examples:
        h.update(hashlib.sha256(f"{e.prompt}\x00{e.completion}".encode("utf-8", "surrogatepass")).digest())
    return tokenizer, task, h.hexdigest()
