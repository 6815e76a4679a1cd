"""A real uvicorn server for tests: the app of `edgellm serve` on a free loopback port."""

import socket
import threading
import time
from contextlib import contextmanager

import uvicorn

from edgellm.generator import Generator
from edgellm.server.app import create_app


@contextmanager
def running(generator, **options):
    """Serve `generator` from a thread on a free loopback port; yields the base URL."""
    server = uvicorn.Server(uvicorn.Config(create_app(generator, **options), log_level="warning"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(15)


class SlowGenerator(Generator):
    """The real tiny model with each generation step `delay` seconds longer, as a larger model would
    be: it lets tests hold requests in flight. `forwards` counts the steps run."""

    delay = 0.04

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.forwards = 0
        self._lock = threading.Lock()

    def step(self, *args):
        time.sleep(self.delay)
        with self._lock:
            self.forwards += 1
        return super().step(*args)
