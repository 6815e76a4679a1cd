"""Generations off the event loop, for the server: admission, a bounded wait, and cancelling.

A `Job` is one request's generation (its `n` choices together). `Workers.pieces(job)` hands it
to the continuous batch (batcher.py: every running request's next token in one model call) or,
for folders that cannot batch, to a worker thread of its own, and yields its pieces as they
come, so the event loop never computes.
Closing that iterator (the client went away, the server is stopping) cancels the job: the worker
checks between tokens and stops before the next one.

Example:
    >>> import asyncio, edgellm
    >>> model = edgellm.load("shakespeare")
    >>> job = Job(model, model.tokenizer.encode("ROMEO:"), model.settings(max_new_tokens=8), stops=())
    >>> async def text(): return "".join([p[1] async for ps in Workers(model, 1, 0).pieces(job) for p in ps])
    >>> isinstance(asyncio.run(text()), str)
    True
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor

from edgellm.folder.generation_config import GenerationConfig
from edgellm.generator import Generator
from edgellm.server.batcher import Batcher
from edgellm.server.responses import Token
from edgellm.session.slots import supported

_END = object()
DEFAULT_BATCH_ROWS = 32  # rows of the continuous batch (sequences decoding at once)
DEFAULT_THREADS = 2  # worker threads where the batch cannot run (each request in a run of its own)


class Job:
    """One request's generation, run by a worker thread; setting `cancel` stops it before its next
    token. Its `n` choices (config.num_return_sequences) run as one batch.

    Args:
        generator: the loaded model.
        prompt_ids: the prompt's token ids.
        config: checked settings (`generator.settings(...)`).
        stops: stop strings; the text ends before the first one found (finish reason "stop").
        strip_leading: drop whitespace at the start of the text (a chat reply after "Assistant:").
        constraint: what the text must match (edgellm.generation.constraints), or None.
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
        self._reported = [0] * self.n  # tokens of each choice handed out so far (with logprobs)

    @property
    def finish_reason(self) -> str:
        return self.finish_reasons[0]

    def run(self, emit: Callable[[tuple], None]) -> None:
        """Generate in a run of its own and hand each piece to `emit` (called in the worker thread)."""
        if self.cancel.is_set() or not self.start(emit):
            return
        steps = self.generator.row_steps(self.prompt_ids, self.config, self.constraint, self.logprobs)
        try:
            while not self.cancel.is_set():
                try:
                    rows = next(steps)
                except StopIteration as end:
                    self.end(emit, end.value)
                    return
                self.report(emit, rows)
        finally:
            steps.close()

    def start(self, emit: Callable[[tuple], None]) -> bool:
        """Emit the echoed prompt, if asked for. Returns whether there is anything to generate."""
        if self.echo:
            text, tokens = self.generator.tokenizer.decode(self.prompt_ids), self._prompt_tokens()
            for i in range(self.n):
                emit((i, text, tokens))
        if self.score_only:
            self.finish_reasons = ["length"] * self.n
        return not self.score_only

    def decoding(self):
        """The `Decoding` of this job's rows, for a loop that runs the model itself (batcher.py)."""
        return self.generator.row_decoding(self.prompt_ids, self.config, self.constraint, self.logprobs)

    def end(self, emit: Callable[[tuple], None], rows: list) -> None:
        """Emit the rows' last pieces (finished: `Decoding.finish`) and record how they ended."""
        self.report(emit, rows)
        self.finish_reasons = [row.finish_reason for row in rows]
        self.completion_tokens = sum(len(row.ids) for row in rows)

    def report(self, emit: Callable[[tuple], None], rows: list) -> None:
        """Emit what is new in each row after a step."""
        reported = self._reported
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
        from edgellm.generation.scoring import score_ids

        ids = self.prompt_ids
        scored, tops = score_ids(self.generator, ids, top=max(self.logprobs, 1)) if len(ids) > 1 else ([], [])
        tops = [t[:self.logprobs] for t in tops] if self.logprobs else [None] * len(scored)
        return [self._token(ids[0], None, None)] + [self._token(i, v, t) for i, v, t in zip(ids[1:], scored, tops)]


class Threads:
    """Jobs each in a run and a thread of their own, at most `max_concurrency` at once: for model
    folders the continuous batch cannot run (`slots.supported`)."""

    def __init__(self, max_concurrency: int):
        self.executor = ThreadPoolExecutor(max_concurrency, thread_name_prefix="edgellm-generate")
        self._lock = threading.Lock()
        self.running = 0

    def submit(self, job: Job, emit: Callable[[tuple], None]) -> Future:
        return self.executor.submit(self._run, job, emit)

    def _run(self, job: Job, emit: Callable[[tuple], None]) -> None:
        with self._lock:
            self.running += 1
        try:
            job.run(emit)
        finally:
            with self._lock:
                self.running -= 1

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


class Workers:
    """At most `max_concurrency` sequences decoding at once, at most `queue_size` requests waiting.

    With an in-place model folder on the CPU (what `edgellm export` writes) every running
    request's rows decode together in one continuous batch of `max_concurrency` rows
    (batcher.py); otherwise each request runs in a thread of its own, `max_concurrency` at once.
    Admission (`admit`/`leave`) is counted apart from running, so a server can refuse a request
    (429) before it answers anything, and queue it in the stream after.
    """

    def __init__(self, generator: Generator, max_concurrency: int | None, queue_size: int):
        self.unbatched = supported(generator.session)  # None, or why the batch cannot run
        if max_concurrency is None:
            max_concurrency = DEFAULT_THREADS if self.unbatched else DEFAULT_BATCH_ROWS
        if max_concurrency < 1 or queue_size < 0:
            raise ValueError(f"max_concurrency must be >= 1 and queue_size >= 0. Received: "
                             f"max_concurrency={max_concurrency}, queue_size={queue_size}")
        self.max_concurrency, self.queue_size = max_concurrency, queue_size
        self.scheduler = Threads(max_concurrency) if self.unbatched else Batcher(generator, max_concurrency)
        self.admitted = 0  # running + waiting
        self.jobs: set[Job] = set()  # admitted and not ended

    def admit(self) -> bool:
        if self.admitted >= self.max_concurrency + self.queue_size:
            return False
        self.admitted += 1
        return True

    def leave(self) -> None:
        self.admitted -= 1

    def stats(self) -> dict:
        running = self.scheduler.running
        return {"running": running, "queued": max(0, self.admitted - running), "max_concurrency": self.max_concurrency,
                "queue_size": self.queue_size, "batching": "off" if self.unbatched else "continuous"}

    async def pieces(self, job: Job) -> AsyncIterator[list[tuple]]:
        """Run `job` when its turn comes and yield its pieces (see `Job`) as they come, in lists:
        everything emitted since the last list (more than one piece when the event loop is busy,
        so a loaded server sends fewer, larger chunks)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        pending: list[tuple] = []  # emitted, not yet handed to the loop
        lock = threading.Lock()

        def hand_over() -> None:
            with lock:
                queue.put_nowait(pending[:])
                pending.clear()

        def emit(piece) -> None:
            with lock:
                pending.append(piece)
                if len(pending) > 1:  # a hand-over is on its way already
                    return
            try:
                loop.call_soon_threadsafe(hand_over)
            except RuntimeError:  # the event loop is closed: nobody is listening
                job.cancel.set()

        # the future's callbacks come through the loop after every piece emitted before it ended
        done = asyncio.wrap_future(self.scheduler.submit(job, emit))
        self.jobs.add(job)
        done.add_done_callback(lambda _: (self.jobs.discard(job), queue.put_nowait(_END)))
        try:
            while (pieces := await queue.get()) is not _END:
                yield pieces
            await done  # raises what the job raised
        finally:
            job.cancel.set()
            if not done.done():  # the job stops before its next token; its rows are its own until then
                await asyncio.wait({done})

    def close(self) -> None:
        """Stop every running job before its next token and drop the ones not started."""
        for job in list(self.jobs):
            job.cancel.set()
        self.scheduler.close()
