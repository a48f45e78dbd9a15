"""Long simulation runs: many seeds of the faulty workload on the deterministic simulator.

    python scripts/simulate.py --seeds 10000 [--first 0] [--duration 8] [--voters 3] [--observers 0]

Each seed runs a whole ensemble (the real server code on virtual time, simulated links and disks)
under random crashes, restarts, partitions, one-way cuts and whole-quorum power cuts while two
clients write, then heals, checks liveness and every invariant (zkpy/testing/cluster.py). A
failing seed is printed with its error and the run's event trace; re-run it alone with
`--first SEED --seeds 1`. CI runs a few hundred seeds through tests/replication/test_simulation.py.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zkpy.testing.cluster import simulate
from zkpy.testing.workload import faulty_scenario


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=1000)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--duration", type=float, default=8.0, help="virtual seconds of faults per seed")
    parser.add_argument("--voters", type=int, default=3)
    parser.add_argument("--observers", type=int, default=0)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    started = time.monotonic()
    failures: list[int] = []
    committed = acknowledged = epochs = faults = 0
    for seed in range(args.first, args.first + args.seeds):
        try:
            cluster = simulate(
                seed, faulty_scenario(args.duration), voters=args.voters, observers=args.observers
            )
        except Exception:
            failures.append(seed)
            print(f"seed {seed} FAILED:\n{traceback.format_exc()}", flush=True)
            continue
        committed += len(cluster.invariants.committed)
        acknowledged += len(cluster.invariants.acknowledged)
        epochs += len(cluster.invariants.leaders)
        faults += sum(1 for e in cluster.events if e.split()[1] not in ("start", "heal"))
        done = seed - args.first + 1
        if done % 100 == 0:
            print(f"{done} seeds, {len(failures)} failed, {time.monotonic() - started:.0f}s", flush=True)
    print(
        f"{args.seeds} seeds in {time.monotonic() - started:.0f}s: {len(failures)} failed {failures[:20]}; "
        f"{committed} transactions committed, {acknowledged} acknowledged writes checked, "
        f"{epochs} epochs, {faults} faults injected"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
