"""`edgellm web`: the chat page running a model folder entirely in the browser.

The server here only hands out files: the page (page.py, with the browser backend), the model
folder under /model/, and three npm packages under /modules/: onnxruntime-web (the WASM
runtime: its .wasm file is 14 MB, so it is not shipped with edgellm), @huggingface/tokenizers
(tokenizer.json in JavaScript, the tokenizer transformers.js uses) and @huggingface/jinja (the
folder's chat template). The browser then tokenizes, runs model.onnx step by step with a growing
KV cache (each step's present.* fed back as past_key_values.*; docs/interop.md) and picks the
greedy token, so its text equals edgellm's greedy text. Nothing is fetched from the network.

Example:
    >>> serve_folder("shakespeare", "node_modules", port=8001)  # doctest: +SKIP
"""

from __future__ import annotations

import sys
from pathlib import Path

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from edgellm.folder import model_folder
from edgellm.server import page
from edgellm.server.process import _exit_cleanly_on_signals, _is_loopback, _listen

# what the page imports from node_modules (versions: tests/interop/package.json)
MODULES = ("onnxruntime-web/dist/ort.wasm.min.mjs", "onnxruntime-web/dist/ort-wasm-simd-threaded.wasm",
           "@huggingface/tokenizers/dist/tokenizers.min.mjs", "@huggingface/jinja/dist/index.js")
INSTALL = "npm install onnxruntime-web@1.30.0 @huggingface/tokenizers@0.2.0 @huggingface/jinja@0.5.13"


def create_web_app(model: str | Path, node_modules: str | Path) -> Starlette:
    """The page, the folder's files and the npm modules the page imports. Bad paths raise ValueError."""
    folder = model_folder.read(model)
    modules = Path(node_modules)
    missing = [m for m in MODULES if not (modules / m).is_file()]
    if missing:
        raise ValueError(f"{modules} lacks the npm packages the page runs. Received: --node-modules {modules} "
                         f"(no {missing[0]}). Run `{INSTALL}` in a folder and pass its node_modules.")
    info = page.info(folder, model_folder.read_generation_config(folder), "browser",
                     "JSON output needs edgellm serve (the grammar runs in Python).")
    routes = page.routes(info) + [Mount("/model", StaticFiles(directory=folder.path), name="model"),
                                  Mount("/modules", StaticFiles(directory=modules), name="modules")]
    return Starlette(routes=routes)


def serve_folder(model: str | Path, node_modules: str | Path, host: str = "127.0.0.1", port: int = 8000,
                 log_level: str = "warning") -> None:
    """Serve the in-browser page of `model` until SIGINT or SIGTERM."""
    import uvicorn

    app = create_web_app(model, node_modules)
    sock = _listen(host, port)
    print(f"edgellm: the page running {model_folder.resolve(model).name!r} in the browser is at "
          f"http://{host}:{sock.getsockname()[1]}/", file=sys.stderr, flush=True)
    if not _is_loopback(host):
        print(f"edgellm: warning: {host} is not a loopback address: anyone who can reach it can download the model.",
              file=sys.stderr, flush=True)
    with _exit_cleanly_on_signals():
        uvicorn.Server(uvicorn.Config(app, log_level=log_level)).run(sockets=[sock])
