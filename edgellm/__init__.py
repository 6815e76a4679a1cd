"""edgellm: run small Transformer language models with numpy and onnxruntime.

Example:
    >>> import edgellm
    >>> model = edgellm.load("shakespeare")
    >>> print(model.generate("ROMEO:", max_new_tokens=32, seed=0).text)
"""

from edgellm.config import ModelConfig
from edgellm.generator import GenerationResult, Generator, load
from edgellm.sampling import GenerationConfig
from edgellm.tokenizer import Tokenizer

__all__ = ["GenerationConfig", "GenerationResult", "Generator", "ModelConfig", "Tokenizer", "load"]
