"""bench/gpu_train.py --smoke: every part of the GPU benchmark runs on the CPU under JAX, with
TensorFlow unimportable, as on the GPU machine (PyTorch's part is skipped where torch is missing)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO


@pytest.mark.slow
def test_gpu_bench_smoke_runs_every_part_under_jax_without_tensorflow(tmp_path):
    pytest.importorskip("jax")
    blocker = tmp_path / "no-tensorflow" / "tensorflow"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text('raise ImportError("TensorFlow is not installed here")\n')
    path = os.pathsep.join(p for p in (str(blocker.parent), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": path}
    work = tmp_path / "work"
    result = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_train.py"), "--smoke", "--work", str(work)],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    report = json.loads((work / "gpu_train.json").read_text())
    results = report["results"]
    for shape in ("nano", "gpt2"):
        ours, bare = results[f"{shape}-edgellm"], results[f"{shape}-keras-fit"]
        for run in (ours, bare):
            assert run["backend"] == "jax" and run["tokens_per_sec"] > 0 and run["timed_steps"] >= 1, run
        assert ours["parameters"] == bare["parameters"]  # the same model, padded vocabulary included
        torch_run = results[f"{shape}-torch"]
        assert "tokens_per_sec" in torch_run or torch_run["skipped"] == "torch is not installed"
    gpt2 = report["shapes"]["gpt2"]
    assert results["gpt2-edgellm"]["parameters"] > gpt2["vocab"] * gpt2["width"]  # 1,024 ids, not 300
    quality = results["quality"]
    # the quality run stops at its time budget: on a busy machine after a few steps only
    assert quality["best_val_loss_per_char"] < np.log(257) and quality["steps"] >= 1, quality
    assert (work / "quality_history.csv").exists()
    assert "| nano | edgellm |" in result.stdout and "quality: best validation loss" in result.stdout
