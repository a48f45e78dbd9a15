"""How fast the history checker (zkpy/testing/history.py) checks long register histories.

    python scripts/bench_history.py [--ops 100000 350000] [--registers 3] [--clients 5]

Histories come from the generator the checker's tests use (tests/testing/test_history_checker.py:
single-copy registers with ZooKeeper-style stale reads, 1% unknown outcomes); each is valid, so
the checker must find a linearization of every register. Prints seconds, search states and peak
memory (ru_maxrss) per size.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "testing"))

from test_history_checker import simulate  # noqa: E402

from zkpy.testing.history import History  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ops", type=int, nargs="+", default=[20_000, 100_000, 350_000])
    ap.add_argument("--registers", type=int, default=3)
    ap.add_argument("--clients", type=int, default=5)
    args = ap.parse_args()
    for n in args.ops:
        sim = simulate(
            random.Random(7),
            args.clients,
            n,
            [f"/r{i}" for i in range(args.registers)],
            p_unknown=0.01,
            overlap=0.5,
        )
        start = time.perf_counter()
        result = History(sim.ops).check()
        elapsed = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"{n:>9,} ops, {args.registers} registers: {elapsed:7.2f}s, {result.stats.states:,} states, "
            f"peak {peak:.0f} MB, {'ok' if result.ok else 'VIOLATION?'}"
        )
        if not result.ok:
            print(result.report())
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
