"""Generations in worker threads, for the server: admission, a bounded wait, and cancelling.

A `Job` is one generation. `Workers.pieces(job)` waits for one of `max_concurrency` slots, runs
the job in a worker thread and yields its text as it comes, so the event loop never computes.
Closing that iterator (the client went away, the server is stopping) cancels the job: the worker
checks between tokens and stops before the next one.

Example:
    >>> import asyncio, edgellm
    >>> model = edgellm.load("shakespeare")
    >>> job = Job(model, model.tokenizer.encode("ROMEO:"), model.settings(max_new_tokens=8), stops=())
    >>> async def text(): return "".join([p async for p in Workers(1, 0).pieces(job)])
    >>> isinstance(asyncio.run(text()), str)
    True
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor

from edgellm.generator import Generator
from edgellm.sampling import GenerationConfig

_END = object()


class Job:
    """One generation, run by a worker thread; setting `cancel` stops it before its next token.

    Args:
        generator: the loaded model.
        prompt_ids: the prompt's token ids.
        config: checked settings (`generator.settings(...)`).
        stops: stop strings; the text ends before the first one found (finish reason "stop").
        strip_leading: drop whitespace at the start of the text (a chat reply after "Assistant:").
    """

    def __init__(self, generator: Generator, prompt_ids: list[int], config: GenerationConfig, stops=(),
                 strip_leading: bool = False):
        self.generator, self.prompt_ids = generator, prompt_ids
        self.config = config.replace(stop_strings=tuple(dict.fromkeys((*config.stop_strings, *stops))))
        self.strip_leading = strip_leading
        self.cancel = threading.Event()
        self.completion_tokens = 0
        self.finish_reason = "cancelled"  # then "eos", "length" or "stop"

    def run(self, emit: Callable[[str], None]) -> None:
        """Generate and hand each text piece to `emit` (called in the worker thread)."""
        pieces = self.generator.text_steps(self.prompt_ids, self.config)
        try:
            while not self.cancel.is_set():
                try:
                    self._emit(emit, next(pieces))
                except StopIteration as end:
                    self.completion_tokens, self.finish_reason = len(end.value.ids), end.value.finish_reason
                    return
        finally:
            pieces.close()

    def _emit(self, emit: Callable[[str], None], text: str) -> None:
        if self.strip_leading:
            text = text.lstrip()
            self.strip_leading = not text
        if text:
            emit(text)


class Workers:
    """At most `max_concurrency` jobs at once, each in its own thread; at most `queue_size` waiting.

    Admission (`admit`/`leave`) is counted apart from running, so a server can refuse a request
    (429) before it answers anything, and queue it in the stream after.
    """

    def __init__(self, max_concurrency: int, queue_size: int):
        if max_concurrency < 1 or queue_size < 0:
            raise ValueError(f"max_concurrency must be >= 1 and queue_size >= 0. Received: "
                             f"max_concurrency={max_concurrency}, queue_size={queue_size}")
        self.max_concurrency, self.queue_size = max_concurrency, queue_size
        self.executor = ThreadPoolExecutor(max_concurrency, thread_name_prefix="edgellm-generate")
        self.slots = asyncio.Semaphore(max_concurrency)
        self.admitted = 0  # running + waiting
        self.running: set[Job] = set()

    def admit(self) -> bool:
        if self.admitted >= self.max_concurrency + self.queue_size:
            return False
        self.admitted += 1
        return True

    def leave(self) -> None:
        self.admitted -= 1

    def stats(self) -> dict:
        return {"running": len(self.running), "queued": self.admitted - len(self.running),
                "max_concurrency": self.max_concurrency, "queue_size": self.queue_size}

    async def pieces(self, job: Job) -> AsyncIterator[str]:
        """Wait for a free slot, run `job` in a worker thread and yield its text pieces."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def emit(piece: str) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, piece)
            except RuntimeError:  # the event loop is closed: nobody is listening
                job.cancel.set()

        async with self.slots:
            self.running.add(job)
            done = loop.run_in_executor(self.executor, job.run, emit)
            # runs after every piece emitted before the job ended: both go through the loop in order
            done.add_done_callback(lambda _: (self.running.discard(job), queue.put_nowait(_END)))
            try:
                while (piece := await queue.get()) is not _END:
                    yield piece
                await done  # raises what the worker raised
            finally:
                job.cancel.set()
                if not done.done():  # the worker stops before its next token; the slot is its until then
                    await asyncio.wait({done})

    def close(self) -> None:
        """Stop every running job before its next token and drop the ones not started."""
        for job in list(self.running):
            job.cancel.set()
        self.executor.shutdown(wait=False, cancel_futures=True)
