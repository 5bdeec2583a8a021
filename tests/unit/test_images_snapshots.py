"""Snapshots: prepare, commit, share by chain ID, and clean up after a crash, for both
snapshotters (the mounts are in the root-only conformance suite)."""

import hashlib
import sqlite3
from pathlib import Path

import pytest

from ketch.errors import Conflict, InvalidArgument, NotFound
from ketch.images.snapshots import SNAPSHOTTER_NAMES, Snapshotter, chain_ids, open_snapshotter

DIFF_1 = "sha256:" + "1" * 64
DIFF_2 = "sha256:" + "2" * 64


@pytest.fixture
def db() -> sqlite3.Connection:
    return sqlite3.connect(":memory:")


@pytest.fixture(params=SNAPSHOTTER_NAMES)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


def open_kind(kind: str, root: Path, db: sqlite3.Connection) -> Snapshotter:
    return open_snapshotter(kind, root, db)


def test_chain_ids_formula() -> None:
    expected_second = "sha256:" + hashlib.sha256(f"{DIFF_1} {DIFF_2}".encode()).hexdigest()
    assert chain_ids([DIFF_1, DIFF_2]) == [DIFF_1, expected_second]


def test_chain_ids_empty() -> None:
    assert chain_ids([]) == []


def test_commit_then_lowerdirs(tmp_path: Path, db: sqlite3.Connection, kind: str) -> None:
    snapshots = open_kind(kind, tmp_path, db)
    bottom, top = chain_ids([DIFF_1, DIFF_2])
    first = snapshots.prepare("one", None)
    (first / "a").write_text("a")
    snapshots.commit("one", bottom, DIFF_1, 1)
    second = snapshots.prepare("two", bottom)
    snapshots.commit("two", top, DIFF_2, 0)
    assert snapshots.lowerdirs(top) == [second, first]


def test_commit_of_existing_chain_drops_copy(
    tmp_path: Path, db: sqlite3.Connection, kind: str
) -> None:
    snapshots = open_kind(kind, tmp_path, db)
    first = snapshots.prepare("first", None)
    kept = snapshots.commit("first", DIFF_1, DIFF_1, 0)
    copy = snapshots.prepare("second", None)
    result = snapshots.commit("second", DIFF_1, DIFF_1, 0)
    assert result == kept
    assert not copy.exists()
    assert first.exists()


def test_prepare_needs_committed_parent(tmp_path: Path, db: sqlite3.Connection, kind: str) -> None:
    snapshots = open_kind(kind, tmp_path, db)
    with pytest.raises(NotFound, match="parent snapshot"):
        snapshots.prepare("child", DIFF_1)


def test_prepare_duplicate_key(tmp_path: Path, db: sqlite3.Connection, kind: str) -> None:
    snapshots = open_kind(kind, tmp_path, db)
    snapshots.prepare("key", None)
    with pytest.raises(Conflict, match="'key' is already in use"):
        snapshots.prepare("key", None)


def test_abort_removes_files_and_row(tmp_path: Path, db: sqlite3.Connection, kind: str) -> None:
    snapshots = open_kind(kind, tmp_path, db)
    path = snapshots.prepare("key", None)
    (path / "file").write_text("x")
    snapshots.abort("key")
    assert snapshots.list() == []
    assert list((tmp_path / "snapshots").iterdir()) == []


def test_remove_rejects_parent(tmp_path: Path, db: sqlite3.Connection, kind: str) -> None:
    snapshots = open_kind(kind, tmp_path, db)
    bottom, top = chain_ids([DIFF_1, DIFF_2])
    snapshots.prepare("one", None)
    snapshots.commit("one", bottom, DIFF_1, 0)
    snapshots.prepare("two", bottom)
    snapshots.commit("two", top, DIFF_2, 0)
    with pytest.raises(Conflict, match="parent"):
        snapshots.remove(bottom)
    snapshots.remove(top)
    snapshots.remove(bottom)
    assert snapshots.list() == []


def test_leftovers_removed_on_open(tmp_path: Path, db: sqlite3.Connection, kind: str) -> None:
    snapshots = open_kind(kind, tmp_path, db)
    snapshots.prepare("unfinished", None)
    snapshots.prepare("done", None)
    snapshots.commit("done", DIFF_1, DIFF_1, 0)
    stray = tmp_path / "snapshots" / "999"
    stray.mkdir()
    reopened = open_kind(kind, tmp_path, db)
    assert [snapshot.key for snapshot in reopened.list()] == ["done"]
    assert not stray.exists()
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == ["2"]


def test_copy_child_has_parent_files(tmp_path: Path, db: sqlite3.Connection) -> None:
    snapshots = open_kind("copy", tmp_path, db)
    first = snapshots.prepare("one", None)
    (first / "a").write_text("a")
    snapshots.commit("one", DIFF_1, DIFF_1, 1)
    second = snapshots.prepare("two", DIFF_1)
    assert (second / "a").read_text() == "a"


def test_overlay_child_starts_empty(tmp_path: Path, db: sqlite3.Connection) -> None:
    snapshots = open_kind("overlay", tmp_path, db)
    first = snapshots.prepare("one", None)
    (first / "a").write_text("a")
    snapshots.commit("one", DIFF_1, DIFF_1, 1)
    assert list(snapshots.prepare("two", DIFF_1).iterdir()) == []


def test_other_kind_rejected(tmp_path: Path, db: sqlite3.Connection) -> None:
    open_kind("overlay", tmp_path, db)
    with pytest.raises(InvalidArgument, match="made by the 'overlay' snapshotter"):
        open_kind("copy", tmp_path, db)


def test_unknown_kind_rejected(tmp_path: Path, db: sqlite3.Connection) -> None:
    with pytest.raises(InvalidArgument, match="invalid snapshotter 'zfs'"):
        open_kind("zfs", tmp_path, db)


def test_lowerdirs_missing_chain(tmp_path: Path, db: sqlite3.Connection, kind: str) -> None:
    snapshots = open_kind(kind, tmp_path, db)
    with pytest.raises(NotFound, match="snapshot"):
        snapshots.lowerdirs(DIFF_1)


def test_pending_parent_overlay(tmp_path: Path, db: sqlite3.Connection) -> None:
    snapshots = open_kind("overlay", tmp_path, db)
    bottom, top = chain_ids([DIFF_1, DIFF_2])
    child = snapshots.prepare("two", bottom, parent_pending=True)
    snapshots.prepare("one", None)
    snapshots.commit("one", bottom, DIFF_1, 0)
    snapshots.commit("two", top, DIFF_2, 0)
    assert snapshots.lowerdirs(top)[0] == child


def test_pending_parent_commit_first(tmp_path: Path, db: sqlite3.Connection) -> None:
    snapshots = open_kind("overlay", tmp_path, db)
    bottom, top = chain_ids([DIFF_1, DIFF_2])
    snapshots.prepare("two", bottom, parent_pending=True)
    with pytest.raises(NotFound, match="not committed"):
        snapshots.commit("two", top, DIFF_2, 0)


def test_pending_parent_copy_rejected(tmp_path: Path, db: sqlite3.Connection) -> None:
    snapshots = open_kind("copy", tmp_path, db)
    with pytest.raises(InvalidArgument, match="committed first"):
        snapshots.prepare("two", DIFF_1, parent_pending=True)
    assert snapshots.list() == []
