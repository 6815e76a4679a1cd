"""The export gate: the ONNX model with its KV cache must agree with Keras recomputing everything.

Reference: for each prompt alone, the Keras model decodes greedily by full recompute (no cache,
no padding, the whole sequence every step). Candidate: the exported model decodes greedily with
its KV cache, at each batch size, with several prompts of different lengths left-padded into
one batch. For every row, the greedy ids must be identical and the logits, at prefill and at
every decode step, within `atol` (1e-4; more for a deep, wide model with large logits: `tolerance`). The runtime's own generation loop must give the same ids.
"""

from __future__ import annotations

import math

import numpy as np

DEFAULT_PROMPTS = ("ROMEO:", "The king is", "\n", "What is the matter, my lord?")


class ParityError(ValueError):
    """The exported model does not reproduce the Keras model."""


def keras_greedy(model, prompt_ids: list[int], steps: int) -> tuple[list[int], list[np.ndarray]]:
    """Greedy ids and logits by full recompute: [prefill logits (prompt, vocab), then (vocab,) per step]."""
    seq, logits_per_step = list(prompt_ids), []
    for step in range(steps):
        logits = np.asarray(model(np.array([seq], np.int32), training=False))[0]  # (len(seq), vocab)
        logits_per_step.append(logits if step == 0 else logits[-1])
        seq.append(int(np.argmax(logits[-1])))
    return seq[len(prompt_ids):], logits_per_step


def onnx_greedy_batch(runtime, rows: list[list[int]], steps: int) -> tuple[list[list[int]], list[list[np.ndarray]]]:
    """Greedy decoding of left-padded rows with the KV cache; per row, logits as in `keras_greedy`."""
    batch, longest = len(rows), max(len(r) for r in rows)
    pad = runtime.folder.special_tokens.get("pad_token_id") or 0
    ids = np.full((batch, longest), pad, np.int64)
    mask = np.zeros((batch, longest), np.int64)
    for b, row in enumerate(rows):
        ids[b, longest - len(row):] = row
        mask[b, longest - len(row):] = 1
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)  # (batch, longest)
    past = runtime.empty_past(batch)
    tokens = [[] for _ in rows]
    logits_per_row = [[] for _ in rows]
    for step in range(steps):
        logits, past = runtime.forward(ids, mask, positions, past)  # (batch, seq, vocab)
        next_ids = logits[:, -1].argmax(-1)
        for b, row in enumerate(rows):
            logits_per_row[b].append(logits[b, longest - len(row):] if step == 0 else logits[b, -1])
            tokens[b].append(int(next_ids[b]))
        ids = next_ids[:, None].astype(np.int64)
        positions = positions[:, -1:] + 1
        mask = np.concatenate([mask, np.ones((batch, 1), np.int64)], axis=1)
    return tokens, logits_per_row


def tolerance(cfg, logit_scale: float) -> float:
    """The largest logit difference two float32 computations of one model may show: 1e-4, or for a
    deep, wide model with large logits (a pretrained one) float32's unit roundoff grown by the
    sqrt(hidden_size)-term dot products of each of num_layers blocks, times the logits' scale."""
    return max(1e-4, 2.0 ** -24 * math.sqrt(cfg.hidden_size) * cfg.num_layers * logit_scale)


def check_parity(model, folder, prompts=DEFAULT_PROMPTS, new_tokens: int = 32,
                 atol: float | None = None, batch_sizes=(1, 3)) -> dict:
    """Compare Keras (full recompute) with the exported `folder`. Returns the figures, or raises
    ParityError. `atol`: the largest logit difference allowed (default: `tolerance`)."""
    from edgellm.generator import Generator

    runtime = Generator(folder, providers=["CPUExecutionProvider"])
    encoded = [runtime.encode_prompt(p) for p in prompts]  # the reference sees the ids the runtime runs
    steps = min(new_tokens, model.config.context_length - max(len(ids) for ids in encoded))
    reference = [keras_greedy(model, ids, steps) for ids in encoded]
    if atol is None:
        atol = tolerance(model.config, max(float(np.abs(step).max()) for _, logits in reference for step in logits))

    worst_prefill = worst_decode = 0.0
    failures: list[str] = []
    for batch_size in batch_sizes:
        for start in range(0, len(prompts), batch_size):
            # the last group is filled up with the first prompts so every batch has batch_size rows
            group = [(start + i) % len(prompts) for i in range(batch_size)]
            tokens, logits = onnx_greedy_batch(runtime, [encoded[i] for i in group], steps)
            for row, i in enumerate(group):
                ref_tokens, ref_logits = reference[i]
                worst_prefill = max(worst_prefill, float(np.abs(ref_logits[0] - logits[row][0]).max()))
                for step in range(1, steps):
                    worst_decode = max(worst_decode, float(np.abs(ref_logits[step] - logits[row][step]).max()))
                if tokens[row] != ref_tokens:
                    step = next(s for s, (a, b) in enumerate(zip(tokens[row], ref_tokens)) if a != b)
                    failures.append(f"batch {batch_size}, prompt {prompts[i]!r}: at step {step} Keras chose "
                                    f"{ref_tokens[step]}, ONNX chose {tokens[row][step]}")
    for prompt, (ref_tokens, _) in zip(prompts, reference):
        looped = runtime.generate(prompt, max_new_tokens=steps, temperature=0.0, stop_token_ids=()).token_ids
        if looped != ref_tokens:
            failures.append(f"prompt {prompt!r}: edgellm's generation loop gave other ids than Keras")

    worst = max(worst_prefill, worst_decode)
    report = {
        "prompts": len(prompts),
        "batch_sizes": list(batch_sizes),
        "new_tokens_per_prompt": steps,
        "max_abs_logit_diff_prefill": worst_prefill,
        "max_abs_logit_diff_decode": worst_decode,
        "atol": atol,
        "greedy_tokens_equal": not failures,
    }
    if failures or worst > atol:
        detail = "; ".join(failures[:3]) or f"max logit difference {worst:.2e} > {atol:.0e}"
        raise ParityError(f"The ONNX model does not match the Keras model: {detail}. Nothing was written.")
    return report
