"""A bounded on-disk store for uploaded checkpoints, keyed by their sha256.

Uploaded checkpoints are kept on disk so that the model cache can key on a file path and a link can
restore the checkpoint later. Without a bound, every distinct upload would stay on the server's disk
forever; this store keeps at most `max_files` files and `max_bytes` bytes, evicting the least
recently stored or re-uploaded ones first.

    store = UploadStore.from_environment(Path(tempfile.gettempdir()) / "drnet-explorer-checkpoints")
    path = store.put(upload.getvalue())        # <sha256>.pt, within bounds
    later = store.path_for(path.stem)          # the same file, or None once evicted

Only files named `<64 hex digits>.pt` belong to the store: anything else in the directory is neither
counted nor deleted, except partial `<digest>.pt.*.tmp` files that a crashed write left behind
(removed once older than PARTIAL_GRACE_S, at start-up and on every put).

Environment: DRNET_UPLOAD_DIR, DRNET_UPLOAD_MAX_FILES and DRNET_UPLOAD_MAX_MB override the directory and
the defaults (read by `UploadStore.from_environment`); server replicas share uploads through one directory.
"""
from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from pathlib import Path

# A handful of checkpoints covers a few people comparing their own models at once; the app keeps at most
# four loaded models in memory anyway, so more files on disk would rarely be used again.
DEFAULT_MAX_FILES = 8
# DRNet checkpoints are a few MB; 512 MB leaves room for much larger ones while staying a small share
# of a shared machine's temporary disk.
DEFAULT_MAX_MB = 512
MAX_FILES_ENV = "DRNET_UPLOAD_MAX_FILES"
MAX_MB_ENV = "DRNET_UPLOAD_MAX_MB"
DIR_ENV = "DRNET_UPLOAD_DIR"

SUFFIX = ".pt"
PARTIAL_SUFFIX = ".tmp"
# Writing even a large checkpoint to local disk takes seconds: a partial file older than this is a leftover.
PARTIAL_GRACE_S = 120
DIGEST = re.compile(r"[0-9a-f]{64}")


def _number_from_environment(name: str, default, kind):
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a {kind.__name__}") from None


class UploadTooLarge(ValueError):
    """An upload bigger than the store's whole byte budget: it could never be kept."""

    def __init__(self, size: int, limit: int):
        super().__init__(f"The upload is {size / 1e6:,.1f} MB ({size:,} bytes); uploads are limited to "
                         f"{limit / 1e6:,.1f} MB ({limit:,} bytes) on this server.")
        self.size, self.limit = size, limit


class UploadStore:
    """At most `max_files` stored checkpoints totalling at most `max_bytes`, oldest (by mtime) evicted first."""

    def __init__(self, directory: Path | str, max_files: int = DEFAULT_MAX_FILES,
                 max_bytes: int = DEFAULT_MAX_MB * 1_000_000):
        if max_files < 1 or max_bytes < 1:
            raise ValueError(f"an upload store needs room for one file: max_files={max_files}, max_bytes={max_bytes}")
        self.directory = Path(directory)
        self.max_files, self.max_bytes = max_files, max_bytes
        # Sessions of one server run in threads of one process: one lock keeps a put's eviction from
        # deleting a file another put is just refreshing. Other processes only ever see whole files.
        self._lock = threading.Lock()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._remove_partial_files()
        with self._lock:
            self._evict(keep=None)

    @classmethod
    def from_environment(cls, directory: Path | str) -> UploadStore:
        """A store in DRNET_UPLOAD_DIR (else `directory`) with the bounds from DRNET_UPLOAD_MAX_FILES /
        DRNET_UPLOAD_MAX_MB, else the defaults."""
        directory = os.environ.get(DIR_ENV, "").strip() or directory
        max_files = _number_from_environment(MAX_FILES_ENV, DEFAULT_MAX_FILES, int)
        max_mb = _number_from_environment(MAX_MB_ENV, DEFAULT_MAX_MB, float)
        return cls(directory, max_files=max_files, max_bytes=int(max_mb * 1_000_000))

    def put(self, data: bytes) -> Path:
        """Store `data` as <sha256>.pt (or refresh it if already there) and return its path.

        Raises UploadTooLarge when `data` alone exceeds the byte budget.
        """
        if len(data) > self.max_bytes:
            raise UploadTooLarge(len(data), self.max_bytes)
        path = self.directory / f"{hashlib.sha256(data).hexdigest()}{SUFFIX}"
        self._remove_partial_files()
        with self._lock:
            try:
                os.utime(path)  # already stored: a re-upload counts as recent use
            except FileNotFoundError:
                self._write_whole(path, data)
            self._evict(keep=path)
        return path

    def path_for(self, sha256: str) -> Path | None:
        """The stored file for a digest, or None if it was evicted or the digest is not 64 hex digits."""
        if not isinstance(sha256, str) or not DIGEST.fullmatch(sha256):
            return None
        path = self.directory / f"{sha256}{SUFFIX}"
        return path if path.is_file() else None

    def stored_files(self) -> list[Path]:
        """The store's own files, oldest first."""
        files = []
        for path in self.directory.iterdir():
            if path.suffix == SUFFIX and DIGEST.fullmatch(path.stem):
                try:
                    files.append((path.stat().st_mtime_ns, path.name, path))
                except FileNotFoundError:  # evicted by another process meanwhile
                    continue
        return [path for _, _, path in sorted(files)]

    # ---- internals ---------------------------------------------------------------------------------

    def _write_whole(self, path: Path, data: bytes) -> None:
        # Write under a private name, then rename: a reader (in this or another process) sees either no
        # file or the whole file, never a half-written one.
        partial = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}{PARTIAL_SUFFIX}")
        try:
            partial.write_bytes(data)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)

    def _evict(self, keep: Path | None) -> None:
        files = self.stored_files()
        count, total = len(files), sum(self._size(path) for path in files)
        for path in files:  # oldest first
            if count <= self.max_files and total <= self.max_bytes:
                break
            if path == keep:
                continue
            size = self._size(path)
            path.unlink(missing_ok=True)
            count, total = count - 1, total - size

    def _remove_partial_files(self) -> None:
        # A partial file older than a grace period was left by a crashed write; a younger one may be a
        # write in flight in another server process sharing the directory. Only the store's own go.
        now = time.time()
        for path in self.directory.glob(f"*{SUFFIX}.*{PARTIAL_SUFFIX}"):
            if not DIGEST.fullmatch(path.name.split(".", 1)[0]):
                continue
            try:
                if now - path.stat().st_mtime > PARTIAL_GRACE_S:
                    path.unlink()
            except FileNotFoundError:  # its write finished (or another store removed it) meanwhile
                continue

    @staticmethod
    def _size(path: Path) -> int:
        try:
            return path.stat().st_size
        except FileNotFoundError:
            return 0
