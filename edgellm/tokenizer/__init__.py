"""The tokenizer: byte-level BPE (bpe.py), its tokenizer.json file format (json_format.py) and
its training from text (training.py). Training and the runtime import the same one.

Example:
    >>> from edgellm.tokenizer import Tokenizer
    >>> tok = Tokenizer.train(["to be or not to be"], vocab_size=260)
    >>> tok.decode(tok.encode("to be or not"))
    'to be or not'
"""

from edgellm.tokenizer.bpe import (
    DEFAULT_SPECIAL_TOKENS,
    SPLIT_PATTERN,
    StreamDecoder,
    Tokenizer,
    TokenizerError,
)

__all__ = ["DEFAULT_SPECIAL_TOKENS", "SPLIT_PATTERN", "StreamDecoder", "Tokenizer", "TokenizerError"]
