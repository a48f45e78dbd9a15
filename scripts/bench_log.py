"""Measure TxnLog.write_batch throughput: records/s and fsyncs/s by batch size.

    python scripts/bench_log.py [--dir DIR] [--seconds 2] [--payload 100] [--batch 1 16 128]

Each batch is one write() and one fdatasync, as the server's group commit issues them. The
"no sync" columns (forceSync=no) show the CPU cost of framing and writing alone. Run it on the
disk the data directory will live on: the numbers are the disk's as much as the code's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from zkpy.storage import TxnLog


def run(
    log_dir: Path, batch_size: int, payload: bytes, seconds: float, force_sync: bool
) -> tuple[int, int, float]:
    """Write batches for about `seconds`; return (records, batches, elapsed)."""
    zxid = 1
    batches = 0
    with TxnLog(log_dir, force_sync=force_sync) as log:
        log.write_batch([(zxid, payload)])  # create and preallocate the file outside the timing
        zxid += 1
        start = time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline:
            log.write_batch([(zxid + i, payload) for i in range(batch_size)])
            zxid += batch_size
            batches += 1
        elapsed = time.perf_counter() - start
    return batches * batch_size, batches, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to put the scratch log (default: temp dir)"
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    parser.add_argument("--payload", type=int, default=100, help="payload bytes per record")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16, 128], help="batch sizes")
    args = parser.parse_args()

    payload = os.urandom(args.payload)
    scratch = Path(tempfile.mkdtemp(prefix="bench_log.", dir=args.dir))
    try:
        print(f"log directory: {scratch}  payload: {args.payload} B  {args.seconds:g} s per row")
        print(
            f"{'batch':>6} {'records/s':>11} {'fsyncs/s':>9} {'ms/batch':>9} {'MB/s':>7} {'no-sync rec/s':>14}"
        )
        for size in args.batch:
            records, batches, elapsed = run(scratch / f"sync{size}", size, payload, args.seconds, True)
            fast_records, _, fast_elapsed = run(
                scratch / f"nosync{size}", size, payload, args.seconds / 2, False
            )
            mb = records * (args.payload + 20) / elapsed / 1e6
            print(
                f"{size:>6} {records / elapsed:>11,.0f} {batches / elapsed:>9,.0f} "
                f"{1000 * elapsed / batches:>9.3f} {mb:>7.2f} {fast_records / fast_elapsed:>14,.0f}"
            )
    finally:
        shutil.rmtree(scratch)


if __name__ == "__main__":
    main()
