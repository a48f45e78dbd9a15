"""The dump tool prints what an operator needs to read a log or snapshot, and leaves files alone."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zkpy.jute.codec import encode
from zkpy.jute.ops import CreateRequest, DeleteRequest, MultiRequest, OpCode, SetDataRequest
from zkpy.jute.records import OPEN_ACL_UNSAFE
from zkpy.storage import TxnLog, frames, write_snapshot
from zkpy.storage.dump import dump
from zkpy.storage.snapshot import SNAP_MAGIC
from zkpy.tree.datatree import OPEN_ACL, DataTree
from zkpy.tree.serialize import tree_items
from zkpy.tree.txn import Txn, session_body

T0 = 1_700_000_000_123  # 2023-11-14 22:13:20.123 UTC


def dumped(path: Path) -> list[str]:
    out = io.StringIO()
    dump(path, out)
    return out.getvalue().splitlines()


def write_txns(log_dir: Path, txns: list[Txn]) -> Path:
    with TxnLog(log_dir, prealloc_size=4096) as log:
        log.write_batch([(t.zxid, t.pack()) for t in txns])
    return log_dir / "log.1"


def test_log_records_show_zxid_time_session_cxid_op_and_path(tmp_path: Path) -> None:
    multi = MultiRequest(
        [(OpCode.DELETE, DeleteRequest("/a", -1)), (OpCode.SET_DATA, SetDataRequest("/b", b"", 1))]
    )
    txns = [
        Txn(1, T0, 0x10000AB, 0, OpCode.CREATE_SESSION, session_body(30000, bytes(16))),
        Txn(
            2, T0 + 77, 0x10000AB, 1, OpCode.CREATE, encode(CreateRequest("/app/x", b"v", OPEN_ACL_UNSAFE, 0))
        ),
        Txn(3, T0, 0x10000AB, 2, OpCode.MULTI, encode(multi)),
        Txn(4, T0, 0x10000AB, 3, OpCode.CLOSE_SESSION, b""),
    ]
    lines = dumped(write_txns(tmp_path, txns))
    assert lines == [
        "transaction log log.1: first zxid 0x1",
        "0x1 2023-11-14 22:13:20.123 session 0x10000ab cxid 0x0 create_session timeout 30000ms",
        "0x2 2023-11-14 22:13:20.200 session 0x10000ab cxid 0x1 create /app/x",
        "0x3 2023-11-14 22:13:20.123 session 0x10000ab cxid 0x2 multi [delete /a, set_data /b]",
        "0x4 2023-11-14 22:13:20.123 session 0x10000ab cxid 0x3 close_session",
        "4 transactions",
    ]


def test_damaged_log_is_dumped_up_to_the_damage_and_not_repaired(tmp_path: Path) -> None:
    txn = Txn(1, T0, 1, 1, OpCode.DELETE, encode(DeleteRequest("/gone", -1)))
    path = write_txns(tmp_path, [txn])
    end = frames.HEADER.size + frames.FRAME.size + len(txn.pack())  # file header, frame header, payload
    raw = bytearray(path.read_bytes())
    raw[end : end + 4] = b"\xff\xff\xff\xff"  # garbage after the only record (before the zero tail)
    path.write_bytes(bytes(raw))
    lines = dumped(path)
    assert lines[1].endswith("delete /gone")
    assert lines[-1].startswith(f"invalid data at offset {end}")
    assert path.read_bytes() == bytes(raw)


def test_undecodable_payloads_are_reported_not_fatal(tmp_path: Path) -> None:
    txns = [Txn(1, T0, 1, 1, OpCode.SET_DATA, b"\x00\x00")]
    with TxnLog(tmp_path, prealloc_size=4096) as log:
        log.write_batch([(1, txns[0].pack()), (2, b"not msgpack \xc1")])
    lines = dumped(tmp_path / "log.1")
    assert lines[1].endswith("set_data <undecodable body: 2 bytes>")
    assert lines[2] == "0x2 <not a transaction: 13 bytes>"


def test_snapshot_items_are_listed(tmp_path: Path) -> None:
    path = write_snapshot(tmp_path, 0x200000005, [{"path": "/a", "data": b"x"}, ["session", 7]])
    assert dumped(path) == [
        "snapshot snapshot.200000005: zxid 0x200000005",
        "{'path': '/a', 'data': b'x'}",
        "['session', 7]",
        "2 items",
    ]


def test_a_tree_snapshot_lists_sessions_without_passwords_and_every_znode(tmp_path: Path) -> None:
    tree = DataTree()
    tree.sessions[0x1234] = (30000, b"secret-password!")
    tree.create_node("/app", b"hello", OPEN_ACL, 0x1234, 1, 0x7, 1000)
    tree.last_zxid = 0x7
    path = write_snapshot(tmp_path, 0x7, tree_items(tree))
    lines = dumped(path)
    assert lines[:3] == [
        "snapshot snapshot.7: zxid 0x7",
        "tree format 2, last zxid 0x7, 1 sessions",
        "session 0x1234 timeout 30000ms",
    ]
    assert not any("secret" in line for line in lines)
    app = next(line for line in lines if line.startswith("/app "))
    assert "czxid=0x7" in app and "owner=0x1234" in app and "dataLength=5" in app
    assert "acl=world:anyone:31" in app
    assert sum(1 for line in lines if line.startswith("/")) == 5  # /, /zookeeper (+2), /app


def test_other_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "zoo.cfg").write_text("tickTime=2000\n")
    with pytest.raises(ValueError, match="neither"):
        dump(tmp_path / "zoo.cfg", io.StringIO())
    (tmp_path / "snapshot.1").write_bytes(b"ZKPS")
    with pytest.raises(ValueError, match="truncated header"):
        dump(tmp_path / "snapshot.1", io.StringIO())


def test_zkpy_dump_command(tmp_path: Path) -> None:
    path = write_txns(tmp_path, [Txn(1, T0, 5, 1, OpCode.DELETE, encode(DeleteRequest("/x", -1)))])
    done = subprocess.run(
        [sys.executable, "-m", "zkpy", "dump", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "0x1 2023-11-14 22:13:20.123 session 0x5 cxid 0x1 delete /x" in done.stdout


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=st.binary(min_size=1, max_size=100), at=st.floats(0, 1))
def test_dump_of_a_damaged_log_reports_instead_of_crashing(tmp_path: Path, junk: bytes, at: float) -> None:
    txns = [Txn(z, T0, 1, z, OpCode.DELETE, encode(DeleteRequest(f"/n{z}", -1))) for z in range(1, 6)]
    path = tmp_path / "log.1"
    if not path.exists():
        write_txns(tmp_path, txns)
    raw = bytearray(path.read_bytes())
    pos = int(at * len(raw[:300]))
    raw[pos : pos + len(junk)] = junk
    damaged = tmp_path / "damaged"
    damaged.write_bytes(bytes(raw))
    try:
        lines = dumped(damaged)
    except ValueError:
        assert pos < frames.HEADER.size  # only a damaged file header is refused outright
    else:
        if bytes(raw[:4]) == SNAP_MAGIC:  # the junk made it claim to be a snapshot: shown as one
            assert lines[0].startswith("snapshot ")
            return
        assert lines[0].startswith("transaction log damaged: first zxid")
        assert any(line.endswith(" transactions") for line in lines)  # it got to the end
