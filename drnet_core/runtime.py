"""Process-wide setting for routed inference on CPU: keep freed memory in the process.

Routed inference allocates tensors of a different size for every sub-batch (each branch runs on
the instances that selected it). With glibc's defaults, freed blocks above its mmap/trim thresholds
go back to the operating system, so the next large buffer comes back through page faults and is
zero-filled again. On the 2-core reference machine, routing the 10k test split in batches of 1,000
took 2.65 and 2.79 s with the defaults and 1.49 to 1.64 s with this setting; in batches of 256 (the
default, `evaluate.EVAL_BATCH_SIZE`) the two are within the machine's noise
(`python scripts/inference_experiments.py eval-batch [--keep-freed-memory off]`). The cost is that
the process keeps its peak heap instead of shrinking after it.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

# mallopt parameters from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's largest mmap threshold on 64-bit systems
TRIM_THRESHOLD_BYTES = 512 * 1024 * 1024

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
