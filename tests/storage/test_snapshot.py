"""Snapshots: round trip, checksums, fallback to an older snapshot, atomic replacement."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zkpy.storage import CorruptSnapshotError, load_latest_snapshot, write_snapshot
from zkpy.storage import snapshot as snapshot_module

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.binary(max_size=100),
    st.text(max_size=30),
)
items = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.one_of(st.text(max_size=10), st.integers(0, 2**63)), inner, max_size=5),
    ),
    max_leaves=20,
)


def no_fsync() -> Any:
    """Property tests check content, not durability: skip the (slow, on a busy disk) syncs."""
    return mock.patch("os.fsync")


def load(snap_dir: Path) -> tuple[int, list[Any]] | None:
    found = load_latest_snapshot(snap_dir)
    if found is None:
        return None
    zxid, it = found
    return zxid, list(it)


@settings(max_examples=100, deadline=None)
@given(zxid=st.integers(0, 2**64 - 1), content=st.lists(items, max_size=30))
def test_round_trip(zxid: int, content: list[Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp, no_fsync():
        path = write_snapshot(Path(tmp), zxid, iter(content))
        assert path.name == f"snapshot.{zxid:x}"
        assert load(Path(tmp)) == (zxid, content)


def test_items_spanning_many_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapshot_module, "CHUNK_SIZE", 1000)
    content = [{"path": f"/node{i}", "data": os.urandom(i % 3000)} for i in range(300)]
    write_snapshot(tmp_path, 0x500000001, content)
    assert load(tmp_path) == (0x500000001, content)


def test_newest_snapshot_wins(tmp_path: Path) -> None:
    write_snapshot(tmp_path, 0x10, ["old"])
    write_snapshot(tmp_path, 0x2, ["older"])
    write_snapshot(tmp_path, 0x100, ["newest"])  # hex names: 0x100 sorts after 0x10 by value
    assert load(tmp_path) == (0x100, ["newest"])


def corrupt(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("where", ["chunk data", "chunk header", "footer", "header", "truncated"])
def test_corrupt_newest_falls_back_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    write_snapshot(tmp_path, 5, [{"a": 1}])
    newest = write_snapshot(tmp_path, 9, [{"a": 2}, b"payload" * 10])
    size = newest.stat().st_size
    if where == "truncated":
        newest.write_bytes(newest.read_bytes()[: size // 2])
    else:
        corrupt(newest, {"chunk data": 30, "chunk header": 17, "footer": size - 9, "header": 1}[where])
    with caplog.at_level(logging.WARNING):
        assert load(tmp_path) == (5, [{"a": 1}])
    assert "snapshot.9" in caplog.text


def test_all_snapshots_corrupt_is_an_error_not_an_empty_start(tmp_path: Path) -> None:
    path = write_snapshot(tmp_path, 5, ["x"])
    corrupt(path, 25)
    with pytest.raises(CorruptSnapshotError, match="no valid snapshot"):
        load_latest_snapshot(tmp_path)


def test_no_snapshot(tmp_path: Path) -> None:
    assert load_latest_snapshot(tmp_path) is None
    assert load_latest_snapshot(tmp_path / "missing") is None


def test_leftover_tmp_file_is_ignored(tmp_path: Path) -> None:
    write_snapshot(tmp_path, 5, ["done"])
    (tmp_path / "snapshot.9.tmp").write_bytes(b"ZKPS half written")
    assert load(tmp_path) == (5, ["done"])


def test_failed_write_leaves_no_snapshot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_snapshot(tmp_path, 5, ["good"])

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        write_snapshot(tmp_path, 9, ["never durable"])
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snapshot.5"]
    assert load(tmp_path) == (5, ["good"])


def test_items_generator_failing_midway_leaves_no_snapshot(tmp_path: Path) -> None:
    def items() -> Any:
        yield "first"
        raise RuntimeError("tree walk failed")

    with pytest.raises(RuntimeError):
        write_snapshot(tmp_path, 3, items())
    assert list(tmp_path.iterdir()) == []


@settings(max_examples=100, deadline=None)
@given(
    content=st.lists(items, min_size=1, max_size=20),
    mutations=st.lists(
        st.tuples(st.floats(0, 1), st.binary(min_size=1, max_size=20)), min_size=1, max_size=3
    ),
    cut=st.one_of(st.none(), st.floats(0, 1)),
)
def test_damaged_snapshot_is_never_loaded(
    content: list[Any], mutations: list[tuple[float, bytes]], cut: float | None
) -> None:
    with tempfile.TemporaryDirectory() as tmp, no_fsync():
        snap_dir = Path(tmp)
        write_snapshot(snap_dir, 1, ["older"])
        newest = write_snapshot(snap_dir, 2, content)
        original = newest.read_bytes()
        raw = bytearray(original)
        for where, junk in mutations:
            at = int(where * len(raw))
            raw[at : at + len(junk)] = junk
        if cut is not None:
            del raw[int(cut * len(raw)) :]
        newest.write_bytes(bytes(raw))
        expected = (2, content) if bytes(raw) == original else (1, ["older"])
        assert load(snap_dir) == expected
