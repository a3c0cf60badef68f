"""A bounded on-disk cache of evaluation results, kept per checkpoint sha256 and shared by every server
process that points at the same directory (a restarted server, the replicas behind a proxy).

    cache = ResultCache.from_environment()
    run = cache.get_or_compute(checkpoint_sha, "routed", {"tau": 0.25, ...}, compute, codec=ROUTED_RUN)

A result is stored as `<checkpoint sha256>.<kind>.<key digest>.pt`. The key digest covers the kind, the
settings and `code_fingerprint()` (the drnet_core sources, torch's version), so results of another
version of the code are never served. Files hold plain tensors, numbers, strings, lists and dicts, are
read back with `torch.load(weights_only=True)` and carry their own key, which is checked on reading: a
stored result is the value computed, bit for bit. A file that cannot be read is removed and recomputed.

Identical requests in flight are computed once: within a process, callers of one key wait on one lock;
across processes, on an exclusive `flock` of `<name>.lock` taken before computing and released after the
result file is in place, so a second process waiting on it reads the first one's file. Without `fcntl`
(Windows) processes fall back to "first writer wins": each may compute, and the atomic rename makes
either whole result the one kept.

Bounded like the upload store (`upload_store`): at most `max_files` files and `max_bytes` bytes, least
recently used (by mtime; a hit refreshes it) evicted first, bounds applied when the cache is created;
only the cache's own files are counted or removed, plus partial writes and lock files left by a crashed
process. Environment: DRNET_RESULT_CACHE_DIR (default: `drnet-explorer-results` in the temporary
directory), DRNET_RESULT_CACHE_MAX_FILES, DRNET_RESULT_CACHE_MAX_MB.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import torch

import drnet_core

from drnet_core.analysis.evaluate import RoutedRun
from drnet_app.upload_store import _number_from_environment

try:
    import fcntl
except ImportError:  # not on Windows: processes fall back to first-writer-wins
    fcntl = None

log = logging.getLogger(__name__)

DIR_ENV = "DRNET_RESULT_CACHE_DIR"
MAX_FILES_ENV = "DRNET_RESULT_CACHE_MAX_FILES"
MAX_MB_ENV = "DRNET_RESULT_CACHE_MAX_MB"
DEFAULT_DIR = Path(tempfile.gettempdir()) / "drnet-explorer-results"
# A routed run of the 10,000 test images is about 2.5 MB and a summary a few kB: 1 GB keeps a few
# hundred runs (a class exploring tau and the threshold of one checkpoint) and every summary.
DEFAULT_MAX_FILES = 4096
DEFAULT_MAX_MB = 1024

SUFFIX = ".pt"
PARTIAL_SUFFIX = ".tmp"
LOCK_SUFFIX = ".lock"
# A result is written in well under this; an older partial or lock file was left by a process that died.
LEFTOVER_GRACE_S = 600
KIND = re.compile(r"[a-z][a-z0-9_]{0,39}")
NAME = re.compile(r"[0-9a-f]{64}\.[a-z][a-z0-9_]{0,39}\.[0-9a-f]{32}")


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """A digest of the drnet_core sources and torch's version: results of other code are other keys."""
    digest = hashlib.sha256(torch.__version__.encode())
    package = Path(drnet_core.__file__).resolve().parent
    for source in sorted(package.rglob("*.py")):
        digest.update(source.relative_to(package).as_posix().encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class Codec:
    """How a result type becomes plain data for `torch.save(..., weights_only)` and back."""

    encode: Callable[[Any], Any]
    decode: Callable[[Any], Any]


PLAIN = Codec(encode=lambda value: value, decode=lambda value: value)
ROUTED_RUN = Codec(encode=lambda run: {field.name: getattr(run, field.name) for field in dataclasses.fields(RoutedRun)},
                   decode=lambda fields: RoutedRun(**fields))


class ResultCache:
    """At most `max_files` results totalling at most `max_bytes`, least recently used evicted first."""

    def __init__(self, directory: Path | str, max_files: int = DEFAULT_MAX_FILES,
                 max_bytes: int = DEFAULT_MAX_MB * 1_000_000):
        if max_files < 1 or max_bytes < 1:
            raise ValueError(f"a result cache needs room for one file: max_files={max_files}, max_bytes={max_bytes}")
        self.directory = Path(directory)
        self.max_files, self.max_bytes = max_files, max_bytes
        self._locks: dict[str, list] = {}  # name -> [lock, holders and waiters]
        self._locks_guard = threading.Lock()
        self._evict_lock = threading.Lock()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._remove_leftovers()
        self._evict(keep=None)

    @classmethod
    def from_environment(cls, directory: Path | str | None = None) -> ResultCache:
        """A cache in DRNET_RESULT_CACHE_DIR (else `directory`, else DEFAULT_DIR) with the bounds from
        DRNET_RESULT_CACHE_MAX_FILES / DRNET_RESULT_CACHE_MAX_MB, else the defaults."""
        chosen = os.environ.get(DIR_ENV, "").strip() or directory or DEFAULT_DIR
        max_files = _number_from_environment(MAX_FILES_ENV, DEFAULT_MAX_FILES, int)
        max_mb = _number_from_environment(MAX_MB_ENV, DEFAULT_MAX_MB, float)
        return cls(chosen, max_files=max_files, max_bytes=int(max_mb * 1_000_000))

    # ---- public ------------------------------------------------------------------------------------

    def get_or_compute(self, checkpoint_sha: str, kind: str, key: dict, compute: Callable[[], Any],
                       codec: Codec = PLAIN) -> Any:
        """The stored result for (checkpoint, kind, key), else `compute()`'s, stored for the next caller.

        Concurrent callers of one key, in this process or another sharing the directory, compute it once.
        """
        path, stored_key = self._path(checkpoint_sha, kind, key)
        found = self._read(path, stored_key, codec)
        if found is not None:
            return found
        with self._in_process_lock(path.name), self._across_processes_lock(path):
            found = self._read(path, stored_key, codec)  # computed by whoever held the lock before us
            if found is not None:
                return found
            value = compute()
            self._write(path, {"key": stored_key, "value": codec.encode(value)})
        self._evict(keep=path)
        return value

    def get(self, checkpoint_sha: str, kind: str, key: dict, codec: Codec = PLAIN) -> Any | None:
        """The stored result, or None."""
        path, stored_key = self._path(checkpoint_sha, kind, key)
        return self._read(path, stored_key, codec)

    def stored_files(self) -> list[Path]:
        """The cache's own result files, least recently used first."""
        files = []
        for entry in os.scandir(self.directory):
            if entry.name.endswith(SUFFIX) and NAME.fullmatch(entry.name[:-len(SUFFIX)]):
                try:
                    files.append((entry.stat().st_mtime_ns, entry.name, Path(entry.path)))
                except FileNotFoundError:  # evicted by another process meanwhile
                    continue
        return [path for _, _, path in sorted(files)]

    # ---- internals ---------------------------------------------------------------------------------

    def _path(self, checkpoint_sha: str, kind: str, key: dict) -> tuple[Path, str]:
        if not re.fullmatch(r"[0-9a-f]{64}", checkpoint_sha or ""):
            raise ValueError(f"a result is kept per checkpoint sha256 (64 hex digits), got {checkpoint_sha!r}")
        if not KIND.fullmatch(kind):
            raise ValueError(f"a result kind is a short lower-case name, got {kind!r}")
        stored_key = json.dumps({"checkpoint": checkpoint_sha, "kind": kind, "key": key, "code": code_fingerprint()},
                                sort_keys=True, default=repr)
        digest = hashlib.sha256(stored_key.encode()).hexdigest()[:32]
        return self.directory / f"{checkpoint_sha}.{kind}.{digest}{SUFFIX}", stored_key

    def _read(self, path: Path, stored_key: str, codec: Codec) -> Any | None:
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            if payload["key"] != stored_key:
                raise ValueError("the file holds another key")
            value = codec.decode(payload["value"])
        except FileNotFoundError:
            return None
        except Exception as error:  # a damaged or foreign file: drop it, recompute
            log.warning("dropping unreadable cached result %s: %s", path.name, error)
            path.unlink(missing_ok=True)
            return None
        with contextlib.suppress(FileNotFoundError):
            os.utime(path)  # a hit counts as recent use
        return value

    def _write(self, path: Path, payload: dict) -> None:
        # Written under a private name, then renamed: a reader (here or in another process) sees no file
        # or the whole file.
        partial = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}{PARTIAL_SUFFIX}")
        try:
            torch.save(payload, partial)
            os.replace(partial, path)
        except OSError as error:  # a full or read-only disk costs the sharing, not the result
            log.warning("could not store result %s: %s", path.name, error)
        finally:
            partial.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _in_process_lock(self, name: str):
        with self._locks_guard:
            entry = self._locks.setdefault(name, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._locks_guard:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._locks[name]

    @contextlib.contextmanager
    def _across_processes_lock(self, path: Path):
        if fcntl is None:
            yield
            return
        lock_path = path.with_name(path.name + LOCK_SUFFIX)
        with open(lock_path, "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                # Removed while still held: a process that opened it meanwhile finds the result file in
                # place once it holds the (now unlinked) lock, and reads it instead of computing.
                lock_path.unlink(missing_ok=True)
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _evict(self, keep: Path | None) -> None:
        with self._evict_lock:
            files = self.stored_files()
            sizes = {path: _size(path) for path in files}
            count, total = len(files), sum(sizes.values())
            for path in files:  # least recently used first
                if count <= self.max_files and total <= self.max_bytes:
                    break
                if path == keep:
                    continue
                path.unlink(missing_ok=True)
                count, total = count - 1, total - sizes[path]

    def _remove_leftovers(self) -> None:
        now = time.time()
        for entry in os.scandir(self.directory):
            name = entry.name
            leftover = ((name.endswith(PARTIAL_SUFFIX) or name.endswith(SUFFIX + LOCK_SUFFIX))
                        and NAME.fullmatch(name.split(SUFFIX, 1)[0]))
            if not leftover:
                continue
            with contextlib.suppress(FileNotFoundError):
                if now - entry.stat().st_mtime > LEFTOVER_GRACE_S:
                    os.unlink(entry.path)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
