"""How bench/gpu_train.py measures and reports: Keras step times, the device, model FLOPs
utilisation and the table of results.

    timer = step_timer(); model.fit(..., callbacks=[timer]); timer.figures(skip=3, tokens_per_batch=512)
"""

from __future__ import annotations

import time

PEAK_FLOPS = 989e12  # H200 SXM, dense bfloat16, datasheet
NANOGPT_QUALITY = (1.468, 83.0)  # nats/char, seconds: nanoGPT's shakespeare-char on the H200 (given)


def flops_per_token(shape: dict, parameters: int, position_parameters: int) -> float:
    n = parameters - position_parameters
    return 6 * n + 12 * shape["layers"] * shape["context"] * shape["width"]


def step_timer():
    """A Keras callback that notes when `fit` began, when each batch was started and when it
    finished. It is `async_safe`, so it leaves Keras's asynchronous dispatch on: under JAX the
    loop queues steps ahead, and this callback runs in Keras's worker thread once a batch's results
    exist. Only batches that finished before the loop queued its last one count: after that the
    loop moves on (validation's tracing and compilation) and competes with the worker thread, so
    later completion times would be noted late."""
    import keras

    class StepTimer(keras.callbacks.Callback):
        async_safe = True

        def __init__(self):
            super().__init__()
            self.began, self.started, self.finished = None, {}, {}

        def on_train_begin(self, logs=None):
            self.began = time.perf_counter()

        def on_train_batch_begin(self, batch, logs=None):
            self.started[batch] = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.finished[batch] = time.perf_counter()

        def figures(self, skip: int, tokens_per_batch: int) -> dict:
            queued_all = self.started[max(self.started)]
            last = max(b for b, t in self.finished.items() if t <= queued_all or b == skip + 1)
            seconds = self.finished[last] - self.finished[skip]
            return {"tokens_per_sec": (last - skip) * tokens_per_batch / seconds, "timed_steps": last - skip,
                    "timed_seconds": seconds, "first_step_seconds": self.finished[0] - self.began,
                    "queued_ahead": max(self.finished) - last}

    return StepTimer()


def keras_device() -> str:
    """The device Keras trains on, and the library versions: "NVIDIA H200 (keras 3.15.1, jax ...)"."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return f"{jax.devices()[0].device_kind} (keras {keras.__version__}, jax {jax.__version__})"
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return "gpu" if tf.config.list_logical_devices("GPU") else "cpu"
    return keras.backend.backend()


def table(results: dict, shapes: dict) -> str:
    """The markdown table of the speed parts, then the quality line."""
    lines = ["| shape | run | tokens/s | MFU (of 989 TFLOP/s) | timed steps | first step s | vs PyTorch | vs bare fit |",
             "|---|---|---|---|---|---|---|---|"]
    for shape_name, shape in shapes.items():
        torch_rate = results.get(f"{shape_name}-torch", {}).get("tokens_per_sec")
        fit_rate = results.get(f"{shape_name}-keras-fit", {}).get("tokens_per_sec")
        for kind in ("edgellm", "keras-fit", "torch"):
            r = results.get(f"{shape_name}-{kind}")
            if r is None:
                continue
            if "tokens_per_sec" not in r:
                lines.append(f"| {shape_name} | {kind} | {r.get('skipped') or r.get('error')} | | | | | |")
                continue
            rate = r["tokens_per_sec"]
            on_gpu = "cpu" not in str(r.get("device", "")).lower()
            mfu = rate * flops_per_token(shape, r["parameters"], r["position_parameters"]) / PEAK_FLOPS
            first = r["first_step_seconds"]
            versus = [f"{rate / base:.2f}x" if base else "-" for base in (torch_rate, fit_rate)]
            lines.append(f"| {shape_name} | {kind} | {rate:,.0f} | {f'{mfu:.1%}' if on_gpu else '(cpu)'} | "
                         f"{r['timed_steps']} | {first:.1f} | {versus[0]} | {versus[1]} |")
    q = results.get("quality")
    if q and "best_val_loss_per_char" in q:
        lines += ["", f"quality: best validation loss {q['best_val_loss_per_char']:.4f} nats/char at step "
                      f"{q['best_at_step']} of {q['steps']} ({q['planned_steps']} planned), {q['wall_seconds']:.1f} s "
                      f"wall with start, {q['tokens_per_sec']:,.0f} tokens/s; nanoGPT (given): "
                      f"{NANOGPT_QUALITY[0]} at {NANOGPT_QUALITY[1]:.0f} s", f"quality command: {q['command']}"]
    elif q:
        lines += ["", f"quality: {q.get('error') or q}"]
    return "\n".join(lines)
