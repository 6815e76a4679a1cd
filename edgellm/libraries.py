"""What TensorFlow, Keras and tf2onnx print of their own: kept off the commands' stderr.

`edgellm train` and `edgellm export` show edgellm's lines only, unless run with --library-logs.
The libraries print three kinds of messages, each hidden its own way by `quiet()`:

- C++ log lines of TensorFlow and XLA (`I0000 ... service.cc:153] XLA service ... initialized`,
  `W0000 ... assert_op.cc:39] Ignoring Assert operator` while tf2onnx converts): the environment
  variable TF_CPP_MIN_LOG_LEVEL=2 drops those at INFO and WARNING level; errors still show.
- Lines TensorFlow's shared libraries print while they load, before absl's logging starts
  (`WARNING: All log messages before absl::InitializeLog() is called are written to STDERR`,
  `I0000 ... port.cc:153] oneDNN custom operations are on ...`): they ignore
  TF_CPP_MIN_LOG_LEVEL, so `load` points file descriptor 2 at /dev/null while TensorFlow is
  imported. An import error is still raised, and shown, after it.
- Keras's UserWarning for a softmax over an axis of size 1: the export traces a one-token
  prompt, whose first position attends to itself alone, as it should.

oneDNN stays on (TF_ENABLE_ONEDNN_OPTS is left alone): only its message is hidden, the numbers
are the same. A TF_CPP_MIN_LOG_LEVEL set by the user is kept.

Example:
    >>> json = load("json")  # as `import json`; quietly once quiet() was called
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import warnings

import click

_quiet = False


def quiet() -> None:
    """Hide the libraries' messages from here on, in this process."""
    global _quiet
    _quiet = True
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # read by TensorFlow's C++ logging as it starts
    warnings.filterwarnings("ignore", message="You are using a softmax over axis", category=UserWarning)


def load(name: str):
    """`import name`, with stderr's file descriptor at /dev/null meanwhile once quiet() was called."""
    if not _quiet or name in sys.modules:
        return importlib.import_module(name)
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        return importlib.import_module(name)
    finally:
        with contextlib.suppress(ValueError, OSError):
            sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _hide_unless_asked(ctx, param, library_logs: bool) -> None:
    if not library_logs:
        quiet()


option = click.option("--library-logs", is_flag=True, expose_value=False, callback=_hide_unless_asked,
                      help="Also show TensorFlow's, Keras's and tf2onnx's own messages (start-up and C++ log "
                           "lines, warnings), hidden by default.")
