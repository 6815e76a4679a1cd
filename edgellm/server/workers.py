"""Generations in worker threads, for the server: admission, a bounded wait, and cancelling.

A `Job` is one request's generation (its `n` choices together). `Workers.pieces(job)` waits for
one of `max_concurrency` slots, runs the job in a worker thread and yields its pieces as they
come, so the event loop never computes.
Closing that iterator (the client went away, the server is stopping) cancels the job: the worker
checks between tokens and stops before the next one.

Example:
    >>> import asyncio, edgellm
    >>> model = edgellm.load("shakespeare")
    >>> job = Job(model, model.tokenizer.encode("ROMEO:"), model.settings(max_new_tokens=8), stops=())
    >>> async def text(): return "".join([p[1] async for p in Workers(1, 0).pieces(job)])
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
from edgellm.server.responses import Token

_END = object()


class Job:
    """One request's generation, run by a worker thread; setting `cancel` stops it before its next
    token. Its `n` choices (config.num_return_sequences) run as one batch.

    Args:
        generator: the loaded model.
        prompt_ids: the prompt's token ids.
        config: checked settings (`generator.settings(...)`).
        stops: stop strings; the text ends before the first one found (finish reason "stop").
        strip_leading: drop whitespace at the start of the text (a chat reply after "Assistant:").
        constraint: what the text must match (edgellm.constraints), or None.
        logprobs: None, or record each token's log-probability and this many top alternatives.
        echo: the prompt comes first in each choice (with its logprobs, scored like Generator.score).
        score_only: nothing is generated (echo with max_tokens 0).

    It hands `emit` pieces `(choice index, text, tokens)`, tokens a list of `responses.Token` (None
    without logprobs), and ends with `finish_reasons` and `completion_tokens` set.
    """

    def __init__(self, generator: Generator, prompt_ids: list[int], config: GenerationConfig, stops=(),
                 strip_leading: bool = False, constraint=None, logprobs: int | None = None, echo: bool = False,
                 score_only: bool = False):
        self.generator, self.prompt_ids = generator, prompt_ids
        self.config = config.replace(stop_strings=tuple(dict.fromkeys((*config.stop_strings, *stops))))
        self.constraint, self.logprobs, self.echo, self.score_only = constraint, logprobs, echo, score_only
        self.n = config.num_return_sequences
        self.strip = [strip_leading] * self.n
        self.cancel = threading.Event()
        self.completion_tokens = 0
        self.finish_reasons = ["cancelled"] * self.n  # then "eos", "length" or "stop"

    @property
    def finish_reason(self) -> str:
        return self.finish_reasons[0]

    def run(self, emit: Callable[[tuple], None]) -> None:
        """Generate and hand each piece to `emit` (called in the worker thread)."""
        if self.echo:
            text, tokens = self.generator.tokenizer.decode(self.prompt_ids), self._prompt_tokens()
            for i in range(self.n):
                emit((i, text, tokens))
        if self.score_only:
            self.finish_reasons = ["length"] * self.n
            return
        steps = self.generator.row_steps(self.prompt_ids, self.config, self.constraint, self.logprobs)
        reported = [0] * self.n
        try:
            while not self.cancel.is_set():
                try:
                    rows = next(steps)
                except StopIteration as end:
                    self._emit(emit, end.value, reported)
                    self.finish_reasons = [row.finish_reason for row in end.value]
                    self.completion_tokens = sum(len(row.ids) for row in end.value)
                    return
                self._emit(emit, rows, reported)
        finally:
            steps.close()

    def _emit(self, emit: Callable[[tuple], None], rows: list, reported: list[int]) -> None:
        for i, row in enumerate(rows):
            text = row.text.take()
            if self.strip[i]:
                text = text.lstrip()
                self.strip[i] = not text
            tokens = None
            if self.logprobs is not None:
                tokens = [self._token(row.ids[k], row.logprobs[k], row.top[k] if row.top else None)
                          for k in range(reported[i], len(row.ids))]
                reported[i] = len(row.ids)
            if text or tokens:
                emit((i, text, tokens))

    def _token(self, id: int, logprob: float | None, top) -> Token:
        raw = self.generator.tokenizer.decode_bytes
        return Token(raw([id]), logprob, None if top is None else [(raw([t]), v) for t, v in top])

    def _prompt_tokens(self) -> list[Token] | None:
        """The prompt's tokens with their log-probabilities (the library's scoring), if asked for."""
        if self.logprobs is None:
            return None
        from edgellm.scoring import score_ids

        ids = self.prompt_ids
        scored, tops = score_ids(self.generator, ids, top=max(self.logprobs, 1)) if len(ids) > 1 else ([], [])
        tops = [t[:self.logprobs] for t in tops] if self.logprobs else [None] * len(scored)
        return [self._token(ids[0], None, None)] + [self._token(i, v, t) for i, v, t in zip(ids[1:], scored, tops)]


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

    async def pieces(self, job: Job) -> AsyncIterator[tuple]:
        """Wait for a free slot, run `job` in a worker thread and yield its pieces (see `Job`)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def emit(piece) -> None:
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
