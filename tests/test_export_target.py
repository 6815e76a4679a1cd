"""Where `edgellm export` writes: OUT_DIR is checked before the conversion starts, the opset
before anything, and the temporary folders of a killed export are removed by the next one."""

import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from edgellm.cli import main
from edgellm.export import staging
from edgellm.export.onnx_export import OPSETS, export


def one_error_line(args):
    result = CliRunner().invoke(main, args)
    assert result.exit_code in (1, 2) and isinstance(result.exception, SystemExit), result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


@pytest.mark.parametrize("out, message", [
    ("afile/model", "Cannot create output folder .*afile/model: .*afile is a file"),
    ("afile/deeper/model", "afile is a file"),
    ("existing", "already exists. Pass --force"),
])
def test_a_bad_out_dir_is_refused_before_the_conversion(tiny_checkpoint, tmp_path, out, message):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "existing").mkdir()
    started = time.perf_counter()
    with pytest.raises(ValueError, match=message):
        export(tiny_checkpoint, tmp_path / out)
    assert time.perf_counter() - started < 5  # no conversion ran
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "existing"]
    one_error_line(["export", str(tiny_checkpoint), str(tmp_path / out)])


def test_an_unwritable_parent_is_refused_and_nothing_is_created(tiny_checkpoint, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root may write anywhere, but not into /proc
            if not os.path.isdir("/proc/self"):
                pytest.skip("running as a user who may write anywhere, without /proc")
            line = one_error_line(["export", str(tiny_checkpoint), "/proc/edgellm-export-test/model"])
            assert "Cannot create output folder /proc/edgellm-export-test/model" in line
            return
        line = one_error_line(["export", str(tiny_checkpoint), str(locked / "a" / "model")])
        assert "Cannot create output folder" in line and "Permission denied" in line
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


@pytest.mark.slow
def test_opset_18_exports_a_folder_that_runs(tiny_checkpoint, tmp_path):
    from edgellm import load

    export(tiny_checkpoint, tmp_path / "model", opset=18)
    assert load(tmp_path / "model").generate("ROMEO:", max_new_tokens=4, temperature=0).token_ids


@pytest.mark.parametrize("opset", [0, 1, 16, 19, 99])
def test_an_opset_outside_the_range_is_one_line(tiny_checkpoint, tmp_path, opset):
    with pytest.raises(ValueError, match=rf"opset must be in \[17, 18\].*Received: opset={opset}"):
        export(tiny_checkpoint, tmp_path / "out", opset=opset)
    line = one_error_line(["export", str(tiny_checkpoint), str(tmp_path / "out"), "--opset", str(opset)])
    assert "'--opset'" in line and "17<=x<=18" in line
    assert not (tmp_path / "out").exists()
    assert OPSETS == (17, 18)


def test_leftovers_of_a_dead_export_are_removed_and_a_running_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    target = tmp_path / "tiny"
    left = [tmp_path / f".tiny.export-{dead}-k3j1", tmp_path / f".tiny.export-{dead}-scratch-x2"]
    running = tmp_path / f".tiny.export-{os.getppid()}-abcd"  # a live process
    other = tmp_path / f".tiny2.export-{dead}-abcd"  # another target's
    for folder in (*left, running, other):
        folder.mkdir()
        (folder / "model.onnx").write_bytes(b"half")
    staging.check_target(target, force=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([running.name, other.name])


@pytest.mark.slow
def test_an_export_killed_midway_leaves_nothing_after_the_next_check(tiny_checkpoint, tmp_path):
    target = tmp_path / "model"
    process = subprocess.Popen([sys.executable, "-m", "edgellm", "export", str(tiny_checkpoint), str(target)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not any(p.name.startswith(".model.export-") for p in tmp_path.iterdir()):
        assert process.poll() is None and time.time() < deadline, "the export ended before writing"
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert any(p.name.startswith(".model.export-") for p in tmp_path.iterdir())
    staging.check_target(target, force=False)
    assert list(tmp_path.iterdir()) == []
