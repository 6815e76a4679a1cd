"""Continuous batching: every running request's next token in one model call.

One thread owns a `SlotRun` (slots.py) and loops: take waiting jobs in order while their rows
fit (each prompt runs alone into its row, its `n` choices copied from it), choose every running
row's next token with its own job's `Decoding` (its settings, seed, penalties, stop strings,
constraint and logprobs, exactly as the library's loop), hand out the new text, drop the rows of
jobs that ended or were cancelled, and run one batched step for all the rows left. So a request
joins the batch after its prefill and leaves it when done, and N requests cost about one model
call a token instead of N.

Imports: `Job` (workers.py) is named for types only: workers.py owns the jobs and imports the
batcher, which only reads a job's fields.

Example:
    >>> import edgellm
    >>> from edgellm.server.workers import Job
    >>> model = edgellm.load("shakespeare")
    >>> batcher = Batcher(model, rows=4)
    >>> job = Job(model, model.tokenizer.encode("ROMEO:"), model.settings(max_new_tokens=4), stops=())
    >>> batcher.submit(job, lambda piece: None).result() is None and job.finish_reason
    'length'
    >>> batcher.close()
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

from edgellm.generator import Generator
from edgellm.session.slots import SlotRun

TYPE_CHECKING = False
if TYPE_CHECKING:
    from edgellm.server.workers import Job


class _Entry:
    """A running job: its decoding, the slots of its rows, and their logits for the next choice."""

    __slots__ = ("job", "emit", "future", "decoding", "slots", "logits", "tokens")

    def __init__(self, job: Job, emit: Callable[[tuple], None], future: Future):
        self.job, self.emit, self.future = job, emit, future
        self.decoding = self.slots = self.logits = self.tokens = None


class Batcher:
    """Runs jobs (workers.Job) together in one continuous batch of at most `rows` rows.

    Args:
        generator: the loaded model (an in-place folder on the CPU: `slots.supported`).
        rows: the most rows decoding at once; a job takes one per choice (its `n`).
    """

    def __init__(self, generator: Generator, rows: int):
        self.generator = generator
        self.run = SlotRun(generator.session, rows)
        self._waiting: deque[_Entry] = deque()
        self._running: list[_Entry] = []
        self._owner: dict[int, tuple[_Entry, int]] = {}  # slot -> (entry, row of its job)
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="edgellm-batch", daemon=True)
        self._thread.start()

    @property
    def running(self) -> int:
        return len(self._running)

    def submit(self, job: Job, emit: Callable[[tuple], None]) -> Future:
        """Queue `job`; `emit` gets its pieces in the batch's thread. The future ends (None, or the
        job's error) after its last piece."""
        if job.n > self.run.capacity_rows:
            raise ValueError(f"n must be at most {self.run.capacity_rows}, the rows this server decodes at once "
                             f"(--max-concurrency). Received: n={job.n}")
        future: Future = Future()
        with self._wake:
            if self._closed:
                raise RuntimeError("The batch is closed.")
            self._waiting.append(_Entry(job, emit, future))
            self._wake.notify()
        return future

    def close(self) -> None:
        """Stop: every running and waiting job ends before its next token (finish reason "cancelled")."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout=10)

    # ---- the loop (the batch's thread) ------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not (self._waiting or self._running or self._closed):
                    self._wake.wait()
                if self._closed:
                    for entry in [*self._running, *self._waiting]:
                        entry.future.set_result(None)
                    return
                joining = self._take_waiting()
            try:
                for entry in joining:
                    self._join(entry)
                self._choose()
                if self._running:
                    self._step()
            except Exception as error:  # a failed model step, or a bug: no request is left waiting
                self._fail_all(error, joining)

    def _fail_all(self, error: Exception, joining: list[_Entry]) -> None:
        """End every running (and joining) job with `error` and start from an empty run."""
        for entry in [*self._running, *joining]:
            if not entry.future.done():
                entry.future.set_exception(error)
        self._running, self._owner = [], {}
        self.run.active = 0

    def _take_waiting(self) -> list[_Entry]:
        """The waiting entries whose rows fit now, in order (one that does not fit waits first).
        Entries cancelled while waiting end here, without waiting for rows."""
        for entry in [entry for entry in self._waiting if entry.job.cancel.is_set()]:
            self._waiting.remove(entry)
            entry.future.set_result(None)
        free, taken = self.run.capacity_rows - self.run.active, []
        while self._waiting and self._waiting[0].job.n <= free:
            entry = self._waiting.popleft()
            free -= entry.job.n
            taken.append(entry)
        return taken

    def _join(self, entry: _Entry) -> None:
        """The prompt's run into a new row, copied for each further choice."""
        job = entry.job
        try:
            if job.cancel.is_set() or not job.start(entry.emit):
                entry.future.set_result(None)
                return
            entry.decoding = job.decoding()
            first, logits = self.run.add(entry.decoding.row_prompts[0])
        except Exception as error:  # this request's error: the others go on
            entry.future.set_exception(error)
            return
        entry.slots = [first] + [self.run.fork(first) for _ in range(job.n - 1)]
        for row, slot in enumerate(entry.slots):
            self._owner[slot] = (entry, row)
        entry.logits = np.tile(logits, (job.n, 1))
        self._running.append(entry)

    def _choose(self) -> None:
        """Every running job's next tokens; jobs that end (done, cancelled, failed) leave the batch."""
        ended, chosen = [], self._choose_together()
        for entry in self._running:
            job, decoding = entry.job, entry.decoding
            try:
                if job.cancel.is_set():
                    ended.append((entry, None))
                    continue
                if not decoding.done:  # a grammar that matches only the empty text ends it before a step
                    entry.tokens, _ = decoding.step(entry.logits, chosen.get(id(entry)))
                    job.report(entry.emit, decoding.search.rows)
                if decoding.done:
                    job.end(entry.emit, decoding.finish())
                    ended.append((entry, None))
            except Exception as error:
                ended.append((entry, error))
        for entry, error in ended:
            self._leave(entry)
            if error is None:
                entry.future.set_result(None)
            else:
                entry.future.set_exception(error)

    def _choose_together(self) -> dict[int, np.ndarray]:
        """The tokens of running jobs whose samplers share their settings (`Sampler.shared_key`),
        chosen in one call per group: each row still draws from its own generator. id(entry) ->
        its rows' tokens; the other jobs choose alone in `Decoding.step`."""
        groups: dict[tuple, list[_Entry]] = {}
        for entry in self._running:
            sampler = entry.decoding.sampler
            if sampler is not None and sampler.shared_key is not None and not entry.decoding.done \
                    and not entry.job.cancel.is_set():
                groups.setdefault(sampler.shared_key, []).append(entry)
        chosen = {}
        for entries in groups.values():
            if len(entries) < 2:
                continue
            first = entries[0].decoding
            logits = np.concatenate([entry.logits for entry in entries])
            draws = [entry.decoding.sampler.draws() for entry in entries]
            tokens = first.sampler.choose(logits, first.state, None if draws[0] is None else np.concatenate(draws))
            start = 0
            for entry in entries:
                chosen[id(entry)] = tokens[start:start + entry.decoding.rows]
                start += entry.decoding.rows
        return chosen

    def _leave(self, entry: _Entry) -> None:
        self._running.remove(entry)
        for slot in sorted(entry.slots, reverse=True):  # from the end: a moved row is never one of these
            del self._owner[slot]
            moved = self.run.remove(slot)
            if moved is not None:
                other, row = self._owner.pop(moved)
                other.slots[row] = slot
                self._owner[slot] = (other, row)

    def _step(self) -> None:
        tokens = np.zeros(self.run.active, np.int64)
        for entry in self._running:
            tokens[entry.slots] = entry.tokens
        logits = self.generator.step(self.run, tokens)  # if the model fails, every running request fails (_loop)
        for entry in self._running:
            entry.logits = logits[entry.slots]  # a copy: the run rewrites its logits next step
