"""Keras callbacks that watch a training run: speed, stopping, divergence and the record.

Training runs as a series of `fit` calls, one per evaluation interval (see train.py). Each call
starts at global micro-batch `start`; `RunControl` counts the micro-batches it runs, which is
where the next call (or a resumed run) picks up the data.

None of them reads a step's results in the training loop itself: counting and stopping happen in
`on_train_batch_begin`, which needs no results, and what needs the loss is `async_safe`. So
under JAX (and PyTorch) Keras dispatches the batch-end callbacks to a worker thread and the next
step is queued while the device still runs this one, as in a bare `fit`; under TensorFlow Keras
calls them in the loop.
"""

from __future__ import annotations

import math
import sys
import threading
import time

import keras


class LossNotFinite(RuntimeError):
    """The training loss became NaN or infinite."""


class RunControl(keras.callbacks.Callback):
    """Counts micro-batches, adds `tokens_per_sec` to the logs (shown in the progress) and stops
    `fit` at the next optimizer-step boundary once `total` micro-batches are started, the time
    budget is spent or `interrupted` is set (by the Ctrl-C handler in train.py).

    With a time budget, `total` is a plan, made again every second from the speed measured since
    the run's first batch ended (so compilation is not counted, evaluations and saves are): the
    micro-batches that fit in the time left, at most `cap` (--steps). The schedule's decay follows
    the plan (`schedule.set_total`), so the learning rate reaches its floor as the budget ends,
    however the machine's speed changes meanwhile.

    Tokens per second are measured from the end of the first batch of each `fit` call. The stop
    is decided as a batch is started (the batch then runs, and `fit` stops after it), so it never
    waits for a step's results.
    """

    async_safe = True  # on_train_batch_end only measures; it may run in Keras's worker thread

    def __init__(self, tokens_per_batch: int, grad_accum: int, cap: int, time_budget: float | None,
                 started: float, schedule=None):
        super().__init__()
        self.tokens_per_batch, self.grad_accum = tokens_per_batch, grad_accum
        self.cap = self.total = cap  # micro-batches: the most to train / the plan
        self.deadline = None if time_budget is None else started + time_budget
        self.schedule = schedule  # planned with the budget (WarmupCosine.plan_with), or None
        self.start = self.position = 0  # global micro-batch at the start of this fit call / now
        self.rate = float("nan")
        self.expired = self.interrupted = False
        self.anchor = None  # (micro-batches done, time) as the run's first batch ended
        self.planned_at = 0.0
        self._lock = threading.Lock()

    def begin(self, start: int) -> None:
        self.start = self.position = start

    def on_epoch_begin(self, epoch, logs=None):
        self.first = self.last = None  # (batch, time) of the first and latest finished batches

    def on_train_batch_begin(self, batch, logs=None):
        self.position = self.start + batch + 1  # counted as started: a started batch always runs
        if self.position % self.grad_accum == 0:
            now = time.perf_counter()
            self.expired = self.deadline is not None and now >= self.deadline
            if self.schedule is not None and self.anchor is not None and now - self.planned_at >= 1.0:
                self._plan(now)
            if self.expired or self.interrupted or self.position >= self.total:
                self.model.stop_training = True

    def _plan(self, now: float) -> None:
        self.planned_at = now
        done, then = self.anchor
        if not (now > then and self.position - 1 > done):
            return
        speed = (self.position - 1 - done) / (now - then)  # micro-batches per second
        total = self.position + int((self.deadline - now) * speed)
        total = min(self.cap, max(self.position, total - total % self.grad_accum))
        if total != self.total:
            self.total = total
            if hasattr(self.model, "jax_state_sync"):  # JAX: hand the step's state back before the change
                self.model.jax_state_sync()
            self.schedule.set_total(total // self.grad_accum)

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        with self._lock:  # worker threads may finish batches out of order
            if self.anchor is None:
                self.anchor = (self.start + batch + 1, now)
            if self.first is None:
                self.first = (batch, now)
            elif batch > self.first[0] and (self.last is None or batch > self.last[0]):
                self.last = (batch, now)
                self.rate = (batch - self.first[0]) * self.tokens_per_batch / (now - self.first[1])
            if logs is not None and self.last is not None:
                logs["tokens_per_sec"] = round(self.rate)

    @property
    def step(self) -> int:
        """Optimizer steps done."""
        return self.position // self.grad_accum


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raises LossNotFinite at the first micro-batch whose loss is NaN or infinite.

    Raising, rather than keras.callbacks.TerminateOnNaN's stop flag, ends `fit` before the broken
    weights are saved, so the last good checkpoint stays in place. Where Keras runs this in its
    worker thread (JAX), the error reaches the loop a few steps later, at the latest before the
    interval's checkpoint.
    """

    async_safe = True

    def __init__(self, control: RunControl):
        super().__init__()
        self.control = control

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            micro_batches = self.control.start + batch + 1
            raise LossNotFinite(f"the training loss became {float(loss)} at step "
                                f"{math.ceil(micro_batches / self.control.grad_accum)}")


class Recorder(keras.callbacks.Callback):
    """After each validation, adds perplexity, loss per character and the learning rate to the
    logs (so the progress bar and TensorBoard show them), appends a row to `history`, and ends
    the `fit` call: one call covers one evaluation interval."""

    def __init__(self, history: list[dict], control: RunControl, schedule, val_tokens_per_char: float,
                 started: float, seconds_before: float = 0.0):
        super().__init__()
        self.history, self.control, self.schedule = history, control, schedule
        self.val_tokens_per_char = val_tokens_per_char
        self.started, self.seconds_before = started, seconds_before

    def on_epoch_end(self, epoch, logs=None):
        val_loss = float(logs["val_loss"])
        logs["val_perplexity"] = math.exp(min(val_loss, 700.0))
        logs["val_loss_per_char"] = val_loss * self.val_tokens_per_char
        logs["lr"] = float(self.schedule(max(0, self.control.position - 1)))
        self.history.append({
            "step": self.control.step, "train_loss": float(logs["loss"]), "val_loss": val_loss,
            "val_perplexity": logs["val_perplexity"], "val_loss_per_char": logs["val_loss_per_char"],
            "lr": logs["lr"], "tokens_per_sec": self.control.rate,
            "seconds": self.seconds_before + time.perf_counter() - self.started,
        })
        self.model.stop_training = True


class Progress(keras.callbacks.Callback):
    """Training progress on `stream` (stderr): one line per evaluation, and on a terminal (`live`)
    a line redrawn in place as steps finish. A log file gets plain lines, no escapes:

        step 30/30: loss 4.7563, val loss 4.7127 (3.3302 per char, perplexity 111.35), lr 3.0e-04, 5,570 tokens/s, 41 s

    Put it after Recorder, whose row of the history it prints.
    """

    async_safe = True  # it only writes; it may run in Keras's worker thread

    def __init__(self, recorder: Recorder, stream=None, live: bool | None = None):
        super().__init__()
        self.recorder = recorder
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.drawn = 0.0  # when the live line was last drawn
        self.width = 0  # its length, to blank what a shorter line leaves

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if not self.live or now - self.drawn < 0.2 or "loss" not in (logs or {}):
            return
        self.drawn = now
        control = self.recorder.control
        self._write(f"\rstep {control.step}/{control.total // control.grad_accum}: loss {float(logs['loss']):.4f}"
                    + (f", {control.rate:,.0f} tokens/s" if math.isfinite(control.rate) else ""), end="")

    def on_epoch_end(self, epoch, logs=None):
        row, control = self.recorder.history[-1], self.recorder.control
        rate = f", {row['tokens_per_sec']:,.0f} tokens/s" if math.isfinite(row["tokens_per_sec"]) else ""
        self._write(("\r" if self.live else "") +
                    f"step {row['step']}/{control.total // control.grad_accum}: loss {row['train_loss']:.4f}, val loss {row['val_loss']:.4f} "
                    f"({row['val_loss_per_char']:.4f} per char, perplexity {row['val_perplexity']:.2f}), "
                    f"lr {row['lr']:.1e}{rate}, {row['seconds']:.0f} s", end="\n")

    def _write(self, line: str, end: str) -> None:
        text = line.lstrip("\r")
        padding = " " * max(0, self.width - len(text)) if self.live else ""
        self.width = 0 if end else len(text)
        self.stream.write(line + padding + end)
        self.stream.flush()


def tensorboard_logs(out_dir, enabled: bool, log) -> list:
    """keras.callbacks.TensorBoard writing to OUT/logs, or nothing (disabled, or no TensorFlow)."""
    if not enabled:
        return []
    try:  # the callback writes with tf.summary, which needs both
        import tensorboard  # noqa: F401

        from edgellm import libraries

        libraries.load("tensorflow")  # quietly in `edgellm train` on the JAX backend too
    except ImportError:
        log("TensorBoard logs need tensorflow and tensorboard; skipping them")
        return []
    return [keras.callbacks.TensorBoard(log_dir=str(out_dir / "logs"), write_graph=False)]
