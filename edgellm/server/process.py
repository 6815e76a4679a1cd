"""`edgellm serve`: the HTTP server's process around the app of app.py.

It listens on HOST:PORT (an error names the address when it cannot), warns when the address is
not a loopback one (the server has no authentication), and serves until SIGINT or SIGTERM: then
it stops accepting connections, lets running requests finish for up to GRACEFUL_SHUTDOWN_S
seconds, cancels the rest and exits with status 0.

Example:
    >>> serve("shakespeare", port=8000)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import ipaddress
import signal
import socket
import sys
import threading

from edgellm.generator import load
from edgellm.server.app import create_app

GRACEFUL_SHUTDOWN_S = 5


def serve(model: str, host: str = "127.0.0.1", port: int = 8000, max_concurrency: int | None = None,
          queue_size: int = 64, threads: int | None = None, log_level: str = "info", ui: bool = True) -> None:
    """Load `model` and serve it until SIGINT or SIGTERM. Bad options raise ValueError."""
    import uvicorn

    app = create_app(load(model, threads=threads), max_concurrency=max_concurrency, queue_size=queue_size, ui=ui)
    sock = _listen(host, port)
    bound = sock.getsockname()[1]
    workers = app.state.server.workers
    batching = f"batching off: {workers.unbatched}" if workers.unbatched else "continuous batching"
    print(f"edgellm: serving {app.state.server.model_id!r} at http://{host}:{bound}/v1 "
          f"(max concurrency {workers.max_concurrency}, queue {queue_size}, {batching})", file=sys.stderr, flush=True)
    if ui:
        print(f"edgellm: chat page at http://{host}:{bound}/", file=sys.stderr, flush=True)
    if not workers.unbatched and app.state.server.generator.defaults.prompt_lookup_num_tokens:
        print("edgellm: the continuous batch decodes one token a row per step: the folder's prompt_lookup_num_tokens "
              "is not used here (the text is the same; it is a speed setting)", file=sys.stderr, flush=True)
    if not _is_loopback(host):
        print(f"edgellm: warning: {host} is not a loopback address and this server has no authentication: "
              "anyone who can reach it can use the model.", file=sys.stderr, flush=True)
    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
    with _exit_cleanly_on_signals():
        uvicorn.Server(config).run(sockets=[sock])


def _listen(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as error:
        raise ValueError(f"Cannot listen on {host}:{port}: {error.strerror or error}. Received: --host {host} "
                         f"--port {port}. Choose another port, or stop what is using it.") from None
    return sock


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextlib.contextmanager
def _exit_cleanly_on_signals():
    """uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again to the handler
    that was there before it; a no-op handler there lets the process exit with status 0."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
