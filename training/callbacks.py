"""Keras callbacks that watch a training run: speed, stopping, divergence and the record.

Training runs as a series of `fit` calls, one per evaluation interval (see train.py). Each call
starts at global micro-batch `start`; `RunControl` counts the micro-batches it runs, which is
where the next call (or a resumed run) picks up the data.
"""

from __future__ import annotations

import math
import time

import keras


class LossNotFinite(RuntimeError):
    """The training loss became NaN or infinite."""


class RunControl(keras.callbacks.Callback):
    """Counts micro-batches, adds `tokens_per_sec` to the logs (shown in the progress bar) and
    stops `fit` at the next optimizer-step boundary once the time budget is spent or
    `interrupted` is set (by the Ctrl-C handler in train.py).

    Tokens per second are measured from the end of the first batch of each `fit` call, so
    tracing and compilation are not counted.
    """

    def __init__(self, tokens_per_batch: int, grad_accum: int, time_budget: float | None, started: float):
        super().__init__()
        self.tokens_per_batch, self.grad_accum = tokens_per_batch, grad_accum
        self.deadline = None if time_budget is None else started + time_budget
        self.start = self.position = 0  # global micro-batch at the start of this fit call / now
        self.rate = float("nan")
        self.expired = self.interrupted = False

    def begin(self, start: int) -> None:
        self.start = self.position = start

    def on_epoch_begin(self, epoch, logs=None):
        self.t0, self.timed = None, 0

    def on_train_batch_end(self, batch, logs=None):
        self.position += 1
        now = time.perf_counter()
        if self.t0 is None:
            self.t0 = now
        else:
            self.timed += 1
            self.rate = self.timed * self.tokens_per_batch / (now - self.t0)
            if logs is not None:
                logs["tokens_per_sec"] = round(self.rate)
        if self.position % self.grad_accum == 0:
            self.expired = self.deadline is not None and now >= self.deadline
            if self.expired or self.interrupted:
                self.model.stop_training = True

    @property
    def step(self) -> int:
        """Optimizer steps done."""
        return self.position // self.grad_accum


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raises LossNotFinite at the first micro-batch whose loss is NaN or infinite.

    Raising, rather than keras.callbacks.TerminateOnNaN's stop flag, ends `fit` before the broken
    weights are validated or saved, so the last good checkpoint stays in place.
    """

    def __init__(self, control: RunControl):
        super().__init__()
        self.control = control

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise LossNotFinite(f"the training loss became {float(loss)} at step "
                                f"{math.ceil(self.control.position / self.control.grad_accum)}")


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
