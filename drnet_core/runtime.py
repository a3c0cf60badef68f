"""Process-wide settings for routed inference on CPU; entry points call `configure_cpu_memory` first, and
threads that evaluate call `use_every_core_in_this_thread`.

Keep freed memory in the process. Routed inference allocates tensors of a different size for every
sub-batch (each branch runs on the instances that selected it). With glibc's defaults, freed blocks
above its mmap/trim thresholds go back to the operating system, so the next large buffer comes back
through page faults and is zero-filled again, which makes large evaluation batches markedly slower.
The cost is that the process keeps its peak heap instead of shrinking after it.

Back large tensors with transparent huge pages, so that the executor's many passes over large
activations (gathers, scatters, node sums) pay less for address translation; on a virtual machine
whose speed drifts, this keeps routed batches steadier. torch's CPU allocator reads
THP_MEM_ALLOC_ENABLE once, at the process's first tensor, so the setting only takes effect when made
before any tensor exists.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

# mallopt parameters from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's largest mmap threshold on 64-bit systems
TRIM_THRESHOLD_BYTES = 512 * 1024 * 1024

HUGE_PAGES_VARIABLE = "THP_MEM_ALLOC_ENABLE"  # read by torch's CPU allocator (c10/core/impl/alloc_cpu.cpp)
SYSTEM_HUGE_PAGES = Path("/sys/kernel/mm/transparent_hugepage/enabled")
MODES_WITH_HUGE_PAGES = ("always", "madvise")  # the kernel's modes in which a madvise'd range can get them

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Serve large tensors from the heap and stop returning freed memory to the OS (glibc only).

    Idempotent; returns whether the setting is in effect. Elsewhere (macOS, musl) it does nothing.
    """
    global _applied
    if _applied is None:
        _applied = False
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):
            return False
        _applied = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
            mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
        log.debug("glibc keeps freed memory: %s", _applied)
    return _applied


def system_huge_pages() -> str | None:
    """The kernel's transparent-huge-page mode ("always", "madvise" or "never"), or None where it has none."""
    try:
        modes = SYSTEM_HUGE_PAGES.read_text().split()
    except OSError:
        return None
    chosen = [mode.strip("[]") for mode in modes if mode.startswith("[")]
    return chosen[0] if chosen else None


def use_huge_pages() -> bool:
    """Ask torch's CPU allocator to back tensors of 2 MB and more with transparent huge pages.

    Only where the kernel can provide them (a mode other than "never"); a THP_MEM_ALLOC_ENABLE already
    in the environment wins, so `THP_MEM_ALLOC_ENABLE=0` turns this off. Returns whether the setting
    asks for huge pages; it takes effect only if no tensor has been allocated yet (see the module doc).
    """
    if HUGE_PAGES_VARIABLE not in os.environ and system_huge_pages() in MODES_WITH_HUGE_PAGES:
        os.environ[HUGE_PAGES_VARIABLE] = "1"
    return huge_pages_asked()


def huge_pages_asked() -> bool:
    """Whether this process's environment asks torch for huge pages (not whether the kernel gave any)."""
    return os.environ.get(HUGE_PAGES_VARIABLE) == "1"


def configure_cpu_memory() -> dict[str, bool]:
    """Both settings, for the CLI, the app and the scripts; call before the first tensor is allocated."""
    return {"huge_pages": use_huge_pages(), "keep_freed_memory": keep_freed_memory()}


def use_every_core_in_this_thread() -> int:
    """Give the calling thread torch's default intra-op thread count (OMP_NUM_THREADS, else every CPU this
    process may run on) and return it.

    torch's intra-op thread count belongs to each OS thread, and a thread other than the process's main
    thread starts with one. Streamlit runs every script run, and every fragment rerun, in such a thread,
    so without this the app would evaluate on a single core (and `evaluate.batch_workers` would not run
    two batches at a time).
    """
    import torch  # here, not at the top: the memory settings above must come before torch's first tensor

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = int(os.environ.get("OMP_NUM_THREADS") or 0) or cpus
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads
