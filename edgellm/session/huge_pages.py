"""2 MB pages for a model's weights (Linux; best effort).

A decode step at batch 1 reads every weight once. In 4 KB pages the shipped model's 15 MB of
weights span about 3,700 pages, more than the processor's TLB maps at once, so every step also
walks page tables; in 2 MB pages they span 8. Linux's transparent huge pages are usually in
"madvise" mode: a process gets them only where it asks (madvise MADV_HUGEPAGE).

`for_new_memory()` wraps a model's load. onnxruntime allocates the weights itself, so it notes
each anonymous mapping's resident size before, and afterwards, in the mappings that grew by
2 MB or more, asks for huge pages for every 2 MB stretch whose pages are all resident (mincore),
so no page that was not in memory is added, then has them made at once (MADV_COLLAPSE, Linux
6.1 and later; else the kernel's khugepaged does it over time). Collapsing copies the memory:
about 30 ms more to load the shipped model, repaid after about 1,000 tokens. Elsewhere, or where the kernel
refuses, nothing changes; EDGELLM_HUGE_PAGES=0 turns it off. The KV cache stays in ordinary
pages: at position 900 of 1,024 huge pages for it changed nothing measurable. Figures are in
docs/runtime.md.

Example:
    >>> with for_new_memory():
    ...     weights = bytearray(8 << 20)
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys

HUGE_PAGE = 2 << 20
MADV_HUGEPAGE, MADV_COLLAPSE = 14, 25


def enabled() -> bool:
    return sys.platform.startswith("linux") and os.environ.get("EDGELLM_HUGE_PAGES", "1") != "0"


@contextlib.contextmanager
def for_new_memory():
    """Huge pages for the anonymous mappings that grew by 2 MB or more inside the block."""
    if not enabled():
        yield
        return
    before = _resident_anonymous()
    yield
    grown = [(start, end) for start, (end, kb) in _resident_anonymous().items()
             if kb - before.get(start, (0, 0))[1] >= HUGE_PAGE >> 10]
    _advise(grown)


def _resident_anonymous() -> dict:
    """{start: (end, resident KB)} of this process's private writable mappings without a file
    (the heap included), keyed by start: a mapping that grows keeps it."""
    found, span = {}, None
    try:
        with open("/proc/self/smaps") as smaps:
            for line in smaps:
                fields = line.split()
                if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
                    lo, hi = (int(x, 16) for x in fields[0].split("-"))
                    anonymous = len(fields) == 5 or fields[5] == "[heap]"
                    span = (lo, hi) if anonymous and fields[1].startswith("rw") and fields[1][3] == "p" else None
                elif span is not None and fields[0] == "Rss:":
                    found[span[0]] = (span[1], int(fields[1]))
    except OSError:
        return {}
    return found


def _advise(spans: list[tuple[int, int]]) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        madvise, mincore = libc.madvise, libc.mincore
    except (OSError, AttributeError):
        return
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    page = os.sysconf("SC_PAGE_SIZE")
    for lo, hi in spans:
        start, end = -(-lo // HUGE_PAGE) * HUGE_PAGE, hi // HUGE_PAGE * HUGE_PAGE  # whole huge pages inside
        if end <= start:
            continue
        resident = ctypes.create_string_buffer((end - start) // page)
        if mincore(start, end - start, resident) != 0:
            continue
        flags, per_huge = resident.raw, HUGE_PAGE // page  # one byte a page; bit 0: resident
        for i in range((end - start) // HUGE_PAGE):
            if all(b & 1 for b in flags[i * per_huge:(i + 1) * per_huge]):
                here = start + i * HUGE_PAGE
                if madvise(here, HUGE_PAGE, MADV_HUGEPAGE) == 0:
                    madvise(here, HUGE_PAGE, MADV_COLLAPSE)  # refused before Linux 6.1: khugepaged does it later
