"""Helpers for the storage tests: write batches and remember where each landed on disk."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from zkpy.storage import TxnLog, recover
from zkpy.storage.frames import FRAME, HEADER

Record = tuple[int, bytes]


@dataclass
class Written:
    """One batch as written: its records and its byte range in its file."""

    records: list[Record]
    path: Path
    start: int
    end: int


def write_batches(
    log: TxnLog, batches: list[list[bytes]], first_zxid: int = 1, prior: list[Written] | None = None
) -> list[Written]:
    """Write each list of payloads as one batch with consecutive zxids (offsets from the format:
    a HEADER.size-byte file header, then a FRAME.size-byte frame header before each payload). `prior`: what
    earlier calls wrote with the same log."""
    out: list[Written] = list(prior or [])
    zxid = first_zxid
    for payloads in batches:
        records = [(zxid + i, p) for i, p in enumerate(payloads)]
        zxid += len(payloads)
        log.write_batch(records)
        path = log.current_file
        assert path is not None
        start = out[-1].end if out and out[-1].path == path else HEADER.size
        end = start + sum(FRAME.size + len(p) for p in payloads)
        out.append(Written(records, path, start, end))
    return out[len(prior or []) :]


def recovered(log_dir: Path, after_zxid: int = -1) -> list[Record]:
    return list(recover(log_dir, after_zxid))


def flatten(batches: list[Written]) -> list[Record]:
    return [r for b in batches for r in b.records]
