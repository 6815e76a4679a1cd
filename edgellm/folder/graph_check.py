"""Does model.onnx fit its config.json? Checked once at load, so a graph of another model (or a
config.json edited by hand) is named there, not by onnxruntime inside the generation loop.

Two checks: the fixed sizes of the graph's inputs and outputs (KV heads and head size of every
cache tensor, the vocabulary of `logits`) against config.json's architecture; then one token at
the last position of `context_length`, which a graph whose position table is shorter fails (the
table is no input or output, so only a run shows it). The run is one token on an empty cache:
about a millisecond.

Example:
    >>> import onnxruntime as ort
    >>> from edgellm.folder import model_folder
    >>> folder = model_folder.read("shakespeare")
    >>> check_graph(ort.InferenceSession(folder.path / "model.onnx"), folder.config, folder.path / "model.onnx")
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgellm.folder.config import ModelConfig
from edgellm.folder.model_folder import input_names, output_names

# what config.json says about each tensor: (name, axis)
AXES = {"KV heads": 1, "head size": 3, "vocabulary size": 2}


def check_graph(session, config: ModelConfig, path: Path) -> None:
    """Raise a ValueError naming the first way the onnxruntime `session` of model.onnx at `path`
    differs from `config` (its input names are checked by the caller)."""
    cache = {"KV heads": config.kv_heads, "head size": config.head_dim}
    inputs, outputs = input_names(config.num_layers), output_names(config.num_layers)
    wanted = {name: cache for name in inputs[3:] + outputs[1:]}
    wanted["logits"] = {"vocabulary size": config.vocab_size}
    for value in [*session.get_inputs(), *session.get_outputs()]:
        for what, size in wanted.get(value.name, {}).items():
            found = value.shape[AXES[what]] if len(value.shape) > AXES[what] else None
            if isinstance(found, int) and found != size:  # a named dimension is dynamic: nothing to compare
                raise ValueError(f"{path} does not match config.json: its {value.name} has {what} {found}, "
                                 f"config.json's architecture says {size}. Re-export the model folder "
                                 "(model.onnx may be another model's).")
    import onnxruntime as ort

    quiet = ort.RunOptions()
    quiet.log_severity_level = 4  # the failure is reported below, not logged as well
    empty = np.zeros((1, config.kv_heads, 0, config.head_dim), np.float32)  # (batch, kv heads, 0, head_dim)
    last = np.full((1, 1), config.context_length - 1, np.int64)
    feed = dict(zip(inputs, (np.zeros((1, 1), np.int64), np.ones((1, 1), np.int64), last,
                             *[empty] * (2 * config.num_layers))))
    try:
        session.run(outputs[:1], feed, quiet)
    except Exception as error:  # onnxruntime's own exception types
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        reason = reason.partition("Status Message: ")[2] or reason
        raise ValueError(f"{path} does not match config.json: it fails at position {config.context_length - 1}, "
                         f"the last of context_length {config.context_length} (its position table may be "
                         f"shorter): {reason[:300]}. Re-export the model folder.") from None
