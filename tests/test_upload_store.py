"""The bounded store for uploaded checkpoints (app/upload_store.py): bounds by count and bytes,
eviction order, restart behaviour, foreign files, crafted digests and concurrent uploads.

Run: .venv/bin/python -m pytest -q tests/test_upload_store.py
"""
from __future__ import annotations

import hashlib
import os
import threading
import time

import pytest

from drnet_app.upload_store import (DEFAULT_MAX_FILES, DEFAULT_MAX_MB, DIR_ENV, MAX_FILES_ENV, MAX_MB_ENV,
                                     PARTIAL_GRACE_S,
                                     UploadStore, UploadTooLarge)


def blob(tag: int, size: int = 100) -> bytes:
    """Distinct bytes of a given size per tag."""
    return tag.to_bytes(4, "big") * (size // 4)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stored_names(directory) -> set[str]:
    return {path.name for path in directory.iterdir() if path.suffix == ".pt"}


def age(path, seconds_ago: float) -> None:
    """Set a file's mtime into the past: the order of eviction without sleeping."""
    stamp = time.time() - seconds_ago
    os.utime(path, (stamp, stamp))


def test_put_stores_the_bytes_under_their_digest(tmp_path):
    store = UploadStore(tmp_path, max_files=3, max_bytes=10_000)
    path = store.put(blob(1))
    assert path == tmp_path / f"{digest(blob(1))}.pt"
    assert path.read_bytes() == blob(1)
    assert store.path_for(digest(blob(1))) == path


def test_count_bound_evicts_the_oldest_first(tmp_path):
    store = UploadStore(tmp_path, max_files=3, max_bytes=10_000)
    paths = []
    for tag in range(3):
        paths.append(store.put(blob(tag)))
        age(paths[-1], 100 - tag)  # tag 0 oldest
    newest = store.put(blob(3))
    assert stored_names(tmp_path) == {paths[1].name, paths[2].name, newest.name}
    assert store.path_for(digest(blob(0))) is None


def test_byte_bound_evicts_the_oldest_until_the_total_fits(tmp_path):
    store = UploadStore(tmp_path, max_files=10, max_bytes=1_000)
    first, second = store.put(blob(1, 400)), store.put(blob(2, 400))
    age(first, 20)
    age(second, 10)
    third = store.put(blob(3, 400))  # 1,200 bytes: the oldest must go
    assert stored_names(tmp_path) == {second.name, third.name}
    fourth = store.put(blob(4, 900))  # alone it fits; with anything else it does not
    assert stored_names(tmp_path) == {fourth.name}


def test_re_put_refreshes_recency_instead_of_rewriting(tmp_path):
    store = UploadStore(tmp_path, max_files=2, max_bytes=10_000)
    first, second = store.put(blob(1)), store.put(blob(2))
    age(first, 20)
    age(second, 10)
    inode = first.stat().st_ino
    assert store.put(blob(1)) == first
    assert first.stat().st_ino == inode  # the same file, touched, not written again
    store.put(blob(3))
    assert stored_names(tmp_path) == {first.name, f"{digest(blob(3))}.pt"}


def test_the_file_just_stored_is_never_evicted_even_if_oldest(tmp_path):
    store = UploadStore(tmp_path, max_files=1, max_bytes=10_000)
    # A file dated in the future (a clock step back, a copy keeping its mtime) makes the new one look oldest.
    future = tmp_path / f"{digest(blob(1))}.pt"
    future.write_bytes(blob(1))
    age(future, -1_000)
    path = store.put(blob(2))
    assert path.read_bytes() == blob(2)
    assert stored_names(tmp_path) == {path.name}


def test_oversize_upload_is_refused_and_nothing_is_evicted(tmp_path):
    store = UploadStore(tmp_path, max_files=3, max_bytes=1_000)
    kept = store.put(blob(1, 400))
    with pytest.raises(UploadTooLarge, match=r"1,200 bytes.*1,000 bytes") as raised:
        store.put(blob(2, 1_200))
    assert isinstance(raised.value, ValueError)
    assert stored_names(tmp_path) == {kept.name}


def test_construction_on_an_existing_directory_enforces_the_bounds(tmp_path):
    names = []
    for tag in range(5):
        path = tmp_path / f"{digest(blob(tag))}.pt"
        path.write_bytes(blob(tag))
        age(path, 100 - tag)
        names.append(path.name)
    UploadStore(tmp_path, max_files=2, max_bytes=10_000)
    assert stored_names(tmp_path) == set(names[3:])
    UploadStore(tmp_path, max_files=5, max_bytes=150)
    assert stored_names(tmp_path) == {names[4]}


def test_leftover_partial_files_are_removed_but_young_ones_are_left(tmp_path):
    crashed = tmp_path / f"{digest(blob(1))}.pt.123.456.tmp"
    crashed.write_bytes(b"half")
    age(crashed, PARTIAL_GRACE_S + 60)
    in_flight = tmp_path / f"{digest(blob(2))}.pt.789.1.tmp"  # another server's write in progress
    in_flight.write_bytes(b"half")
    store = UploadStore(tmp_path, max_files=2, max_bytes=10_000)
    assert not crashed.exists()
    assert in_flight.exists()
    age(in_flight, PARTIAL_GRACE_S + 60)
    store.put(blob(3))
    assert not in_flight.exists()


def test_foreign_files_are_neither_counted_nor_deleted(tmp_path):
    foreign = [tmp_path / "notes.txt", tmp_path / "model.pt", tmp_path / f"{'A' * 64}.pt", tmp_path / "x.tmp",
               tmp_path / f"{'g' * 64}.pt"]
    for path in foreign:
        path.write_bytes(b"not a stored checkpoint" * 100)
        age(path, 1_000)
    store = UploadStore(tmp_path, max_files=1, max_bytes=200)
    first = store.put(blob(1))
    second = store.put(blob(2))
    assert all(path.exists() for path in foreign)
    assert not first.exists() and second.exists()


@pytest.mark.parametrize("crafted", ["../../etc/passwd", "", "a" * 63, "a" * 65, "A" * 64, "../" + "a" * 61,
                                     "a" * 64 + "/", "/" + "a" * 64, "a" * 63 + "\n", None, 42])
def test_crafted_digests_are_rejected(tmp_path, crafted):
    store = UploadStore(tmp_path / "store", max_files=2, max_bytes=10_000)
    (tmp_path / "passwd.pt").write_bytes(b"secret")
    assert store.path_for(crafted) is None


def test_path_for_an_evicted_digest_is_none(tmp_path):
    store = UploadStore(tmp_path, max_files=1, max_bytes=10_000)
    store.put(blob(1))
    store.put(blob(2))
    assert store.path_for(digest(blob(1))) is None
    assert store.path_for(digest(blob(2))) is not None


def test_concurrent_puts_of_the_same_data_give_one_intact_file(tmp_path):
    data = os.urandom(2_000_000)
    store = UploadStore(tmp_path, max_files=2, max_bytes=10_000_000)
    start = threading.Barrier(8)
    results, errors, seen = [], [], []

    def upload():
        try:
            start.wait()
            path = store.put(data)
            results.append(path)
            seen.append(path.read_bytes() == data)  # what a session reads right after its put
        except Exception as error:  # collected: an exception in a thread would not fail the test
            errors.append(error)

    threads = [threading.Thread(target=upload) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(set(results)) == 1 and all(seen)
    assert [path.name for path in tmp_path.iterdir()] == [f"{digest(data)}.pt"]


def test_concurrent_stores_on_one_directory_never_expose_a_partial_file(tmp_path):
    """Two server processes share the directory: each has its own store (and lock)."""
    data = os.urandom(2_000_000)
    stores = [UploadStore(tmp_path, max_files=2, max_bytes=10_000_000) for _ in range(4)]
    start = threading.Barrier(len(stores))
    seen, errors = [], []

    def upload(store):
        try:
            start.wait()
            seen.append(store.put(data).read_bytes() == data)
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=upload, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and all(seen) and len(seen) == len(stores)
    assert [path.name for path in tmp_path.iterdir()] == [f"{digest(data)}.pt"]


def test_bounds_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(MAX_FILES_ENV, raising=False)
    monkeypatch.delenv(MAX_MB_ENV, raising=False)
    default = UploadStore.from_environment(tmp_path)
    assert (default.max_files, default.max_bytes) == (DEFAULT_MAX_FILES, DEFAULT_MAX_MB * 1_000_000)
    monkeypatch.setenv(MAX_FILES_ENV, "3")
    monkeypatch.setenv(MAX_MB_ENV, "0.5")
    custom = UploadStore.from_environment(tmp_path)
    assert (custom.max_files, custom.max_bytes) == (3, 500_000)
    monkeypatch.setenv(MAX_FILES_ENV, "many")
    with pytest.raises(ValueError, match=MAX_FILES_ENV):
        UploadStore.from_environment(tmp_path)


def test_replicas_share_the_directory_named_in_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(DIR_ENV, str(tmp_path / "shared"))
    first, second = UploadStore.from_environment(tmp_path / "a"), UploadStore.from_environment(tmp_path / "b")
    path = first.put(blob(7))
    assert second.path_for(digest(blob(7))) == path == tmp_path / "shared" / f"{digest(blob(7))}.pt"
    monkeypatch.delenv(DIR_ENV)
    assert UploadStore.from_environment(tmp_path / "a").directory == tmp_path / "a"


def test_a_store_without_room_for_one_file_is_refused(tmp_path):
    with pytest.raises(ValueError):
        UploadStore(tmp_path, max_files=0, max_bytes=1_000)
