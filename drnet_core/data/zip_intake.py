"""Zip archives of images, read in memory with limits, for a batch audit.

A zip is read from its bytes and nothing is ever written to disk, so a member named
`../../etc/passwd` cannot land anywhere; such names are still refused, as a person would want to know.
Every limit below is checked against what the archive declares and again against what is really read
(a crafted header can understate a member's size):

* members: at most `MAX_MEMBERS` files in all, nested archives included;
* size: each member at most `images.MAX_UPLOAD_BYTES` once decompressed, the whole set at most
  `MAX_TOTAL_BYTES`; a zip bomb's member is skipped by name, a bomb of many members stops the reading;
* nesting: an archive inside an archive is opened up to `MAX_DEPTH` levels, deeper ones are skipped.

Whatever cannot be used is reported by name with the reason (`Skipped`) and the rest are kept.
An archive that cannot be read at all raises `ArchiveRejected`.
"""
from __future__ import annotations

import io
import posixpath
import zipfile
from dataclasses import dataclass

from drnet_core.data.images import MAX_UPLOAD_BYTES

MAX_MEMBERS = 5_000
MAX_TOTAL_BYTES = 256 * 1024 * 1024
MAX_DEPTH = 2  # the archive itself and archives directly inside it
ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")


class ArchiveRejected(ValueError):
    """The archive as a whole cannot be used; the message says why."""


@dataclass(frozen=True)
class Member:
    name: str   # path inside the archive, nested archives joined with '/'
    data: bytes


@dataclass(frozen=True)
class Skipped:
    name: str
    reason: str


def is_zip(data: bytes) -> bool:
    return bytes(data[:4]) in ZIP_SIGNATURES


def unsafe_name_reason(name: str) -> str | None:
    """Why a member's name is refused (absolute, climbing out with '..', drive letters), or None."""
    normal = name.replace("\\", "/")
    if normal.startswith("/") or (len(normal) > 1 and normal[1] == ":"):
        return "its name is an absolute path"
    if ".." in normal.split("/"):
        return "its name climbs out of the archive ('..')"
    if "\x00" in normal:
        return "its name holds a NUL character"
    return None


class _Budget:
    """What is left of the member and byte limits across an archive and everything nested in it."""

    def __init__(self):
        self.members = MAX_MEMBERS
        self.bytes = MAX_TOTAL_BYTES


def read_zip(data: bytes, name: str = "the archive") -> tuple[list[Member], list[Skipped]]:
    """The files of a zip (and of zips inside it, to `MAX_DEPTH`) as in-memory members, and what was skipped."""
    members: list[Member] = []
    skipped: list[Skipped] = []
    _read_archive(bytes(data), name, "", 1, _Budget(), members, skipped)
    return members, skipped


def _open(data: bytes, name: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as error:
        raise ArchiveRejected(f"'{name}' is not a readable zip archive ({error}).") from None


def _read_archive(data: bytes, name: str, prefix: str, depth: int, budget: _Budget, members: list[Member],
                  skipped: list[Skipped]) -> None:
    with _open(data, name) as archive:
        files = [info for info in archive.infolist() if not info.is_dir()]
        if len(files) > budget.members:
            raise ArchiveRejected(f"'{name}' holds {len(files):,} files; at most {MAX_MEMBERS:,} are read in one "
                                  "audit. Split it into smaller archives.")
        declared = sum(info.file_size for info in files)
        if declared > budget.bytes:
            raise ArchiveRejected(f"'{name}' declares {declared / 2**20:,.0f} MB once decompressed, over the "
                                  f"{MAX_TOTAL_BYTES // 2**20} MB an audit reads (a zip bomb?). Split it.")
        budget.members -= len(files)
        for info in files:
            _read_member(archive, info, prefix, depth, budget, members, skipped)


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, prefix: str, depth: int, budget: _Budget,
                 members: list[Member], skipped: list[Skipped]) -> None:
    shown = prefix + info.filename
    reason = unsafe_name_reason(info.filename)
    if reason is None and info.flag_bits & 0x1:
        reason = "it is encrypted"
    if reason is None and info.file_size > MAX_UPLOAD_BYTES:
        reason = f"it declares {info.file_size / 2**20:,.0f} MB once decompressed, over the {MAX_UPLOAD_BYTES // 2**20} MB limit"
    if reason is None:
        data, reason = _bounded_read(archive, info, budget)
    if reason is not None:
        skipped.append(Skipped(shown, reason))
        return
    if is_zip(data):
        if depth >= MAX_DEPTH:
            skipped.append(Skipped(shown, f"an archive nested more than {MAX_DEPTH - 1} level deep is not opened"))
            return
        try:
            _read_archive(data, shown, shown + "/", depth + 1, budget, members, skipped)
        except ArchiveRejected as error:
            skipped.append(Skipped(shown, str(error)))
        return
    members.append(Member(shown, data))


def _bounded_read(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: _Budget) -> tuple[bytes, str | None]:
    """The member's bytes, reading at most one byte past what it may hold; (b"", reason) when it cannot be used."""
    allowed = min(MAX_UPLOAD_BYTES, budget.bytes)
    try:
        with archive.open(info) as handle:
            data = handle.read(allowed + 1)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, RuntimeError) as error:
        return b"", f"it cannot be decompressed ({error})"
    if len(data) > allowed:
        if allowed < MAX_UPLOAD_BYTES:
            return b"", f"the archive's files exceed the {MAX_TOTAL_BYTES // 2**20} MB an audit reads"
        return b"", (f"it decompresses to more than {MAX_UPLOAD_BYTES // 2**20} MB although it declares "
                     f"{info.file_size:,} bytes (a zip bomb?)")
    budget.bytes -= len(data)
    return data, None


def member_folder(name: str) -> str:
    """The folder a member sits in (the last one, nested archives included): the class, in an ImageFolder layout."""
    return posixpath.basename(posixpath.dirname(name.replace("\\", "/")))
