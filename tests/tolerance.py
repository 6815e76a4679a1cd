"""How far two computations of one float32 graph may differ on any x86-64 CPU.

onnxruntime's and TensorFlow's kernels sum in an order that depends on the CPU (AVX2 or AVX-512
vector widths, VNNI), the thread count and the shapes (a row alone or in a batch, a prompt at once
or one token a step). Reordering a float32 sum of n products moves it by at most n * u * sum|x*y|
(u = 2**-24, the unit roundoff), so each layer's matmuls (the longest has max(4 * width, context)
terms) add at most that relative error, and the errors of the layers' matmuls in series add up.

The rule for tests: a figure computed two ways is compared on a float32 folder within
`float32_atol`, never within a number one machine happened to give; int8 folders (their
activations are quantized per call, by kernels that differ between CPUs) are compared only where
both sides ran the same computation (then they are equal), or by what survives any kernel
(shapes, ranges, counts).
"""

import numpy as np

UNIT_ROUNDOFF = 2.0 ** -24


def float32_atol(config, scale: float) -> float:
    """The most two orderings of the model's float32 arithmetic can move a value of magnitude
    `scale` (a logit: its largest absolute value; a log-probability: twice the logits' scale, since
    log_softmax subtracts a log-sum-exp that moves as much as a logit)."""
    terms = max(4 * config.hidden_size, config.context_length)
    matmuls = 2 * config.num_layers + 1  # attention and MLP per layer, then the head
    assert config.hidden_size and matmuls > 1
    return float(terms * matmuls * UNIT_ROUNDOFF * scale)


def logit_scale(model, ids) -> float:
    """The largest absolute logit the model gives over ids: the scale of its log-probabilities'
    rounding too (log_softmax moves at most twice as much as a logit)."""
    seq = np.array([ids], np.int64)
    logits, _ = model.forward(seq, np.ones_like(seq), np.arange(len(ids))[None], model.empty_past(1))
    return float(np.abs(logits).max())


def assert_float32_close(config, got, expected, scale: float | None = None):
    """got and expected are one float32 computation in two orders: within float32_atol of the
    values' scale (expected's largest magnitude unless given)."""
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    atol = float32_atol(config, np.abs(expected).max() if scale is None else scale)
    assert got.shape == expected.shape and np.abs(got - expected).max() <= atol, (np.abs(got - expected).max(), atol)
