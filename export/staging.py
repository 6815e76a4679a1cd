"""Where `edgellm export` writes: OUT_DIR is checked before any work, and the folder is built in
hidden temporary folders beside it, renamed into place only when complete.

    models/.tiny.export-4242-k3j1/     the folder being written (becomes models/tiny)
    models/.tiny.export-4242-scratch…  the float32 model while a smaller variant is made

Each temporary folder carries the exporting process's id. An export that is killed (`kill -9`,
a power cut) leaves its folders behind; the next export of the same OUT_DIR removes those whose
process is gone. To clean up by hand: `rm -rf models/.tiny.export-*` while no export of
models/tiny runs.

Example:
    >>> check_target(Path("models/tiny"), force=False)
    >>> tmp = new_folder(Path("models/tiny"))
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


def check_target(out_dir: Path, force: bool) -> None:
    """Refuse an OUT_DIR that exists (unless `force`) or cannot be created, before any work;
    then remove what killed exports of it left behind. Creates nothing."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"Output folder {out_dir} is a file. Choose another OUT_DIR.")
    if out_dir.exists() and not force:
        raise ValueError(f"Output folder {out_dir} already exists. Pass --force to replace it.")
    missing = []  # the folders export would create, innermost first
    ancestor = out_dir.parent
    while not ancestor.exists():
        missing.append(ancestor)
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"Cannot create output folder {out_dir}: {ancestor} is a file. Choose another OUT_DIR.")
    try:  # a trial run of what the export does at its end, undone at once
        for folder in reversed(missing):
            folder.mkdir()
        os.rmdir(tempfile.mkdtemp(prefix=_prefix(out_dir), dir=out_dir.parent))
    except OSError as error:
        raise ValueError(f"Cannot create output folder {out_dir}: {error.strerror}. Choose another OUT_DIR.") \
            from None
    finally:
        for folder in missing:
            with contextlib.suppress(OSError):
                folder.rmdir()
    remove_leftovers(out_dir)


def new_folder(out_dir: Path, role: str = "") -> Path:
    """A new hidden temporary folder beside `out_dir`, named after this process."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{_prefix(out_dir)}{os.getpid()}-{role}", dir=out_dir.parent))


def move_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename the complete folder `tmp` to `out_dir`; an existing `out_dir` (--force) is swapped
    out only now, and removed."""
    if not out_dir.exists():
        os.replace(tmp, out_dir)
        return
    old = new_folder(out_dir, "old-")
    os.replace(out_dir, old / out_dir.name)
    os.replace(tmp, out_dir)
    shutil.rmtree(old)


def remove_leftovers(out_dir: Path) -> list[Path]:
    """Remove the temporary folders of exports of `out_dir` whose process is gone. Returns them."""
    removed = []
    parent = out_dir.parent
    if not parent.is_dir():
        return removed
    for path in parent.iterdir():
        if not path.name.startswith(_prefix(out_dir)):
            continue
        pid = path.name[len(_prefix(out_dir)):].split("-")[0]
        if path.is_dir() and pid.isascii() and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _prefix(out_dir: Path) -> str:
    return f".{out_dir.name}.export-"


def _alive(pid: int) -> bool:
    if pid == os.getpid() or os.name == "nt":  # Windows: os.kill(pid, 0) would send Ctrl-C, so never guess
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OSError:
        return False
    return True
