"""Crash and corruption properties of the transaction log (hypothesis).

A "crash" is simulated by copying the log directory while the writer still has it open (the
disk as the crash left it: preallocated tails included) and then damaging the copy the way a
torn write or rot would. Recovery must give back whole batches, in order, never lose a batch
whose write_batch returned before the one in flight, and refuse to paper over a hole.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.storage.logtools import Written, flatten, recovered, write_batches
from zkpy.storage import CorruptLogError, TxnLog
from zkpy.storage.frames import HEADER

PREALLOC = 512  # small, so batches often cross preallocation blocks
SECTOR = 512

payloads = st.lists(st.binary(max_size=200), min_size=1, max_size=5)
# Each batch, and whether the log is rolled (as after a snapshot) before it.
histories = st.lists(st.tuples(payloads, st.booleans()), min_size=1, max_size=8)
# ZKPY_STORAGE_EXAMPLES=2000 for a deeper run than the suite's.
crash_settings = settings(
    max_examples=int(os.environ.get("ZKPY_STORAGE_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(autouse=True, scope="module")
def _no_fsync() -> Iterator[None]:
    """These properties are about content; recovery's syncs only slow them down on a busy disk."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "fsync", lambda fd: None)
        yield


def write_history(log_dir: Path, history: list[tuple[list[bytes], bool]]) -> tuple[list[Written], Path]:
    """Write the batches, then copy the directory as a crash would leave it; return the copy."""
    written: list[Written] = []
    log = TxnLog(log_dir / "live", prealloc_size=PREALLOC, force_sync=False)
    zxid = 1
    for batch, roll in history:
        if roll:
            log.roll()
        written += write_batches(log, [batch], first_zxid=zxid, prior=written)
        zxid += len(batch)
    crashed = log_dir / "crashed"
    shutil.copytree(log_dir / "live", crashed)
    log.close()
    return written, crashed


def damage(path: Path, start: int, end: int, data: st.DataObject) -> None:
    """Tear or overwrite bytes of `path` between start and end (end may reach into the tail)."""
    raw = bytearray(path.read_bytes())
    kind = data.draw(st.sampled_from(["truncate", "overwrite", "zero-sectors"]))
    if kind == "truncate":
        del raw[data.draw(st.integers(start, end)) :]
    elif kind == "overwrite":
        for _ in range(data.draw(st.integers(1, 3))):
            at = data.draw(st.integers(start, max(start, end - 1)))
            junk = data.draw(st.binary(min_size=1, max_size=64))
            raw[at : at + len(junk)] = junk
    else:
        # A crash mid-write may persist some sectors of the batch and not others, in any order.
        first, last = start // SECTOR, (end - 1) // SECTOR
        for sector in data.draw(st.sets(st.integers(first, last), min_size=1)):
            lo, hi = max(sector * SECTOR, start), min((sector + 1) * SECTOR, end)
            raw[lo:hi] = bytes(hi - lo)
    path.write_bytes(bytes(raw))


@crash_settings
@given(history=histories, data=st.data())
def test_crash_during_a_write_loses_at_most_the_batch_in_flight(
    history: list[tuple[list[bytes], bool]], data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        written, crashed = write_history(Path(tmp), history)
        in_flight = written[-1]
        path = crashed / in_flight.path.name
        before = path.read_bytes()[in_flight.start : in_flight.end]
        damage(path, in_flight.start, in_flight.end, data)
        intact = path.read_bytes()[in_flight.start : in_flight.end] == before

        acknowledged = flatten(written[:-1])
        expected = acknowledged + (in_flight.records if intact else [])
        assert recovered(crashed) == expected

        # The recovered log takes new writes after what survived.
        next_zxid = (expected[-1][0] if expected else 0) + 1
        with TxnLog(crashed, prealloc_size=PREALLOC, force_sync=False) as log:
            log.write_batch([(next_zxid, b"after the crash")])
        assert recovered(crashed) == [*expected, (next_zxid, b"after the crash")]


@crash_settings
@given(history=histories, data=st.data())
def test_torn_or_overwritten_tail_recovers_whole_batches(
    history: list[tuple[list[bytes], bool]], data: st.DataObject
) -> None:
    """Crash anywhere in the newest file: what survives is the whole batches before the damage."""
    with tempfile.TemporaryDirectory() as tmp:
        written, crashed = write_history(Path(tmp), history)
        newest = crashed / written[-1].path.name
        raw = bytearray(newest.read_bytes())
        data_end = written[-1].end
        if data.draw(st.booleans(), label="truncate"):
            cut = data.draw(st.integers(0, data_end), label="cut")
            del raw[cut:]
        else:
            at = data.draw(st.integers(HEADER.size, data_end), label="overwrite from")
            junk = data.draw(st.binary(min_size=data_end - at, max_size=data_end - at + 64), label="junk")
            original = bytes(raw[at : at + len(junk)])
            raw[at : at + len(junk)] = junk
            # Bytes the junk happened to leave unchanged are not damage.
            cut = at + next(
                (i for i, (a, b) in enumerate(zip(junk, original, strict=False)) if a != b), len(junk)
            )
        newest.write_bytes(bytes(raw))

        survivors = [b for b in written if b.path.name != newest.name or b.end <= cut]
        assert recovered(crashed) == flatten(survivors)


@crash_settings
@given(history=histories.filter(lambda h: len(h) >= 2), data=st.data())
def test_damage_before_the_last_batch_is_corruption(
    history: list[tuple[list[bytes], bool]], data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        written, crashed = write_history(Path(tmp), history)
        victim = written[data.draw(st.integers(0, len(written) - 2), label="damaged batch")]
        path = crashed / victim.path.name
        raw = bytearray(path.read_bytes())
        at = data.draw(st.integers(victim.start, victim.end - 1), label="offset")
        raw[at] ^= data.draw(st.integers(1, 255), label="xor")
        path.write_bytes(bytes(raw))
        # What the files hold, without the preallocated zeros (recovery may give those back).
        files_before = {p.name: p.read_bytes().rstrip(b"\0") for p in crashed.iterdir()}

        try:
            recovered(crashed)
        except CorruptLogError as e:
            assert path.name in str(e)
        else:
            raise AssertionError("a hole in the log was loaded")
        assert {
            p.name: p.read_bytes().rstrip(b"\0") for p in crashed.iterdir()
        } == files_before  # nothing cut


@settings(max_examples=100, deadline=None)
@given(history=histories, after=st.integers(-1, 45))
def test_recover_after_any_zxid(history: list[tuple[list[bytes], bool]], after: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        written, crashed = write_history(Path(tmp), history)
        assert recovered(crashed, after) == [r for r in flatten(written) if r[0] > after]


@crash_settings
@given(
    history=histories,
    mutations=st.lists(
        st.tuples(st.integers(0, 7), st.floats(0, 1), st.binary(min_size=1, max_size=40)),
        min_size=1,
        max_size=4,
    ),
)
def test_any_damage_gives_a_whole_batch_prefix_or_a_corruption_error(
    history: list[tuple[list[bytes], bool]], mutations: list[tuple[int, float, bytes]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        written, crashed = write_history(Path(tmp), history)
        files = sorted({b.path.name for b in written}, key=lambda n: int(n.split(".")[1], 16))
        originals = {name: (crashed / name).read_bytes() for name in files}
        for which, where, junk in mutations:
            name = files[which % len(files)]
            raw = bytearray((crashed / name).read_bytes())
            at = int(where * len(raw))
            raw[at : at + len(junk)] = junk
            (crashed / name).write_bytes(bytes(raw))
        after = {name: (crashed / name).read_bytes() for name in files}

        def changed(name: str, start: int, end: int) -> bool:
            return originals[name][start:end] != after[name][start:end]

        damaged = [i for i, b in enumerate(written) if changed(b.path.name, b.start, b.end)]
        headers_damaged = any(changed(name, 0, HEADER.size) for name in files)
        older_file_damaged = any(originals[name] != after[name] for name in files[:-1])
        first_damaged = damaged[0] if damaged else len(written)
        survivor_after_damage = any(i not in damaged for i in range(first_damaged, len(written)))
        try:
            result = recovered(crashed)
        except CorruptLogError:
            only_tail = not (headers_damaged or older_file_damaged or first_damaged < len(written) - 1)
            assert not only_tail, "refused although only the newest file's tail was damaged"
        else:
            assert not survivor_after_damage, "loaded past a hole"
            assert result == flatten(written[:first_damaged])
