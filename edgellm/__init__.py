"""edgellm: run small Transformer language models with numpy and onnxruntime.

`import edgellm` is cheap: numpy, onnxruntime and the tokenizer load on first use of a name
below, so a command line tool that embeds edgellm starts fast.

Example:
    >>> import edgellm
    >>> model = edgellm.load("shakespeare")
    >>> print(model.generate("ROMEO:", max_new_tokens=32, seed=0).text)
    <BLANKLINE>
    I have ...
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# public name -> module that defines it
_EXPORTS = {
    "load": "edgellm.generator",
    "Generator": "edgellm.generator",
    "GenerationResult": "edgellm.generator",
    "GenerationConfig": "edgellm.folder.generation_config",
    "ScoreResult": "edgellm.generation.scoring",
    "ModelConfig": "edgellm.folder.config",
    "Tokenizer": "edgellm.tokenizer",
    "shipped_model_names": "edgellm.folder.model_folder",
}
# public module -> where it lives (`from edgellm import constraints`)
_MODULES = {"constraints": "edgellm.generation.constraints"}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from edgellm.folder.config import ModelConfig
    from edgellm.folder.generation_config import GenerationConfig
    from edgellm.generator import GenerationResult, Generator, load
    from edgellm.folder.model_folder import shipped_model_names
    from edgellm.generation.scoring import ScoreResult
    from edgellm.tokenizer import Tokenizer


def __getattr__(name: str):
    if name in _MODULES:
        module = importlib.import_module(_MODULES[name])
        globals()[name] = module
        return module
    if name not in _EXPORTS:
        raise AttributeError(f"module 'edgellm' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *_EXPORTS, *_MODULES])
