"""The export gate: the ONNX model with its KV cache must agree with Keras recomputing everything.

For each prompt, the Keras model runs greedy decoding by full recompute (no cache, the whole
sequence every step) and the runtime runs its own loop on the exported folder. The greedy ids
must be identical and the logits, at prefill and at every decode step, within `atol`.
"""

from __future__ import annotations

import numpy as np

DEFAULT_PROMPTS = ("ROMEO:", "The king", "\n", "What is the matter, my lord?")


class ParityError(ValueError):
    """The exported model does not reproduce the Keras model."""


def check_parity(model, tokenizer, folder, prompts=DEFAULT_PROMPTS, new_tokens: int = 32,
                 atol: float = 1e-4) -> dict:
    """Compare Keras (full recompute) with edgellm on the exported `folder`. Returns the figures."""
    from edgellm.generator import Generator

    runtime = Generator(folder, providers=["CPUExecutionProvider"])
    worst_prefill = worst_decode = 0.0
    failures = []
    steps_checked = 0
    for prompt in prompts:
        ids = tokenizer.encode(prompt)
        steps = min(new_tokens, model.config.context_length - len(ids))
        # ONNX: prefill, then one cached decode step per token, greedy
        seq = list(ids)
        onnx_logits = []
        past = runtime.empty_past(1)
        step_ids = np.array([ids], np.int64)
        for _ in range(steps):
            positions = np.arange(len(seq) - step_ids.shape[1], len(seq), dtype=np.int64)[None]
            logits, past = runtime.forward(step_ids, np.ones((1, len(seq)), np.int64), positions, past)
            onnx_logits.append(logits[0])  # (step seq, vocab)
            token = int(np.argmax(logits[0, -1]))
            seq.append(token)
            step_ids = np.array([[token]], np.int64)
        onnx_tokens = seq[len(ids):]
        # Keras: the whole sequence each step; the ONNX tokens are followed so logits line up
        for step in range(steps):
            context = np.array([seq[: len(ids) + step]], np.int32)
            keras_logits = np.asarray(model(context, training=False))[0]  # (seq, vocab)
            if step == 0:
                worst_prefill = max(worst_prefill, float(np.abs(keras_logits - onnx_logits[0]).max()))
            else:
                diff = float(np.abs(keras_logits[-1] - onnx_logits[step][-1]).max())
                worst_decode = max(worst_decode, diff)
            keras_token = int(np.argmax(keras_logits[-1]))
            if keras_token != onnx_tokens[step]:
                failures.append(f"prompt {prompt!r}: step {step} Keras chose {keras_token}, "
                                f"ONNX chose {onnx_tokens[step]}")
                break
        # and the runtime's own generation loop must produce the same ids
        looped = runtime.generate(prompt, max_new_tokens=steps, temperature=0.0, stop_token_ids=()).token_ids
        if looped != onnx_tokens:
            failures.append(f"prompt {prompt!r}: edgellm's loop gave different ids than the step check")
        steps_checked += steps
    report = {
        "prompts": len(prompts),
        "new_tokens_per_prompt": new_tokens,
        "decode_steps_checked": steps_checked,
        "max_abs_logit_diff_prefill": worst_prefill,
        "max_abs_logit_diff_decode": worst_decode,
        "atol": atol,
        "greedy_tokens_equal": not failures,
    }
    if failures or max(worst_prefill, worst_decode) > atol:
        detail = "; ".join(failures) or f"max logit difference {max(worst_prefill, worst_decode):.2e} > {atol:.0e}"
        raise ParityError(f"The ONNX model does not match the Keras model: {detail}. Nothing was written.")
    return report
