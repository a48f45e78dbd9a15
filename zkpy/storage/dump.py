"""`zkpy dump PATH`: print a log or snapshot file for a human, without changing it.

Unlike recovery, the dump shows every valid frame (also those of a torn last batch) and says
where and why it stops, so it can be used to look at a damaged file.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from zkpy.jute.codec import decode
from zkpy.jute.ops import REQUEST_RECORDS, MultiRequest, OpCode
from zkpy.storage import frames, snapshot
from zkpy.storage.errors import CorruptSnapshotError
from zkpy.tree.serialize import SnapshotFormatError, describe_items
from zkpy.tree.txn import Txn, parse_session_body

_MAX_REPR = 200


def dump(path: Path | str, out: TextIO) -> None:
    """Print the file at `path` to `out`. Raises ValueError for a file that is neither a zkpy log
    nor a zkpy snapshot (OSError if it cannot be read)."""
    path = Path(path)
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == frames.LOG_MAGIC:
        _dump_log(path, out)
    elif magic == snapshot.SNAP_MAGIC:
        _dump_snapshot(path, out)
    else:
        raise ValueError(f"{path}: neither a zkpy transaction log nor a snapshot")


def _dump_log(path: Path, out: TextIO) -> None:
    data = path.read_bytes()
    header = frames.read_header(data)
    if header is None:
        raise ValueError(f"{path}: unsupported log version or damaged header")
    out.write(f"transaction log {path.name}: first zxid {header.first_zxid:#x}\n")
    gen = frames.scan_frames(data, header, header.first_zxid - 1)
    count = 0
    while True:
        try:
            zxid, start, end = next(gen)
        except StopIteration as done:
            verdict: frames.Scan = done.value
            break
        out.write(describe_record(zxid, data[start:end]) + "\n")
        count += 1
    out.write(f"{count} transactions\n")
    if not verdict.clean:
        what = "corruption: valid records of a later batch follow" if verdict.later_batch else "a torn write"
        out.write(f"invalid data at offset {verdict.stop} ({what}); records end at offset {verdict.end}\n")


def describe_record(zxid: int, payload: bytes) -> str:
    """One line per transaction: zxid, time, session, cxid, op and (where there is one) path."""
    try:
        txn = Txn.unpack(payload)
    except Exception:
        return f"{zxid:#x} <not a transaction: {len(payload)} bytes>"
    when = datetime.fromtimestamp(txn.time / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    mismatch = "" if txn.zxid == zxid else f" (record says zxid {txn.zxid:#x})"
    line = f"{zxid:#x}{mismatch} {when} session {txn.session_id:#x} cxid {txn.cxid:#x} {_op_name(txn.op)}"
    detail = _body_detail(txn.op, txn.body)
    return f"{line} {detail}" if detail else line


def _op_name(op: int) -> str:
    try:
        return OpCode(op).name.lower()
    except ValueError:
        return f"op{op}"


def _body_detail(op: int, body: bytes) -> str:
    try:
        if op == OpCode.CREATE_SESSION:
            timeout, _ = parse_session_body(body)
            return f"timeout {timeout}ms"
        if op == OpCode.MULTI:
            multi, _ = MultiRequest.read(body, 0)
            return (
                "["
                + ", ".join(f"{_op_name(t)} {getattr(r, 'path', '')}".rstrip() for t, r in multi.ops)
                + "]"
            )
        cls = REQUEST_RECORDS.get(op)
        if cls is not None and getattr(cls, "FIELDS", ())[:1] == ("path",):
            return str(decode(cls, body).path)
    except Exception:
        return f"<undecodable body: {len(body)} bytes>"
    return ""


def _dump_snapshot(path: Path, out: TextIO) -> None:
    try:
        zxid = snapshot.snapshot_zxid(path)
    except CorruptSnapshotError as e:
        raise ValueError(str(e)) from e
    out.write(f"snapshot {path.name}: zxid {zxid:#x}\n")
    try:
        snapshot.verify_snapshot(path, zxid)
    except CorruptSnapshotError as e:
        _dump_raw_items(path, out, f"damaged: {e}")
        return
    try:
        for line in describe_items(snapshot.iter_items(path)):
            out.write(line + "\n")
    except SnapshotFormatError:  # some other items: show them as they are
        _dump_raw_items(path, out, "")


def _dump_raw_items(path: Path, out: TextIO, problem: str) -> None:
    count = 0
    try:
        for item in snapshot.iter_items(path):
            out.write(_short_repr(item) + "\n")
            count += 1
    except CorruptSnapshotError as e:
        out.write(f"{count} items, then: {e}\n")
        return
    out.write(f"{count} items" + (f" ({problem})" if problem else "") + "\n")


def _short_repr(item: Any) -> str:
    text = repr(item)
    return text if len(text) <= _MAX_REPR else text[: _MAX_REPR - 3] + "..."
