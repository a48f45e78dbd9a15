"""Long simulation runs: many seeds of the faulty workload on the deterministic simulator.

    python scripts/simulate.py --seeds 10000 [--first 0] [--duration 8] [--think 0] [--voters 3] [--observers 0]

Each seed runs a whole ensemble (the real server code on virtual time, simulated links and disks)
under the nemesis's faults (zkpy/testing/workload.py FAULTS: crashes, restarts, partitions,
one-way cuts, whole-quorum power cuts, failing, slow and full disks, delay spikes, process
pauses, connection resets, a client's session expiring mid-request) while clients write, then
heals, checks liveness, every invariant (zkpy/testing/cluster.py) and the clients' histories.
The faults injected are counted by kind. A failing seed is printed with its error and the run's
event trace; re-run it alone with `--first SEED --seeds 1`. CI runs a few hundred seeds through
tests/replication/test_simulation.py.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zkpy.testing.cluster import SimCluster, simulate
from zkpy.testing.workload import FAULTS, faulty_scenario


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=1000)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--duration", type=float, default=8.0, help="virtual seconds of faults per seed")
    parser.add_argument(
        "--think", type=float, default=0.0, help="clients pause up to this long between operations (CI: 0.02)"
    )
    parser.add_argument("--voters", type=int, default=3)
    parser.add_argument("--observers", type=int, default=0)
    args = parser.parse_args()
    logging.disable(logging.ERROR)  # the servers log the injected faults (disk errors) at ERROR
    started = time.monotonic()
    failures: list[int] = []
    committed = acknowledged = epochs = expired = 0
    faults: Counter[str] = Counter()
    for seed in range(args.first, args.first + args.seeds):
        clusters: list[SimCluster] = []
        try:
            simulate(
                seed,
                _keep(clusters, faulty_scenario(args.duration, args.think)),
                voters=args.voters,
                observers=args.observers,
            )
        except Exception:
            failures.append(seed)
            print(f"seed {seed} FAILED:\n{traceback.format_exc()}", flush=True)
            if clusters:
                print("trace:\n" + "\n".join(clusters[0].events), flush=True)
            continue
        cluster = clusters[0]
        committed += len(cluster.invariants.committed)
        acknowledged += len(cluster.invariants.acknowledged)
        epochs += len(cluster.invariants.leaders)
        faults.update(cluster.faults)
        expired += sum(1 for e in cluster.events if " session expired " in e)
        done = seed - args.first + 1
        if done % 100 == 0:
            print(f"{done} seeds, {len(failures)} failed, {time.monotonic() - started:.0f}s", flush=True)
    print(
        f"{args.seeds} seeds in {time.monotonic() - started:.0f}s: {len(failures)} failed {failures[:20]}; "
        f"{committed} transactions committed, {acknowledged} acknowledged writes checked, "
        f"{epochs} epochs, {expired} client sessions expired, {faults.total()} faults injected:"
    )
    for kind in FAULTS:
        print(f"  {kind:15} {faults[kind]}")
    return 1 if failures else 0


def _keep(
    clusters: list[SimCluster], scenario: Callable[[SimCluster], Awaitable[None]]
) -> Callable[[SimCluster], Awaitable[None]]:
    """The scenario, handing its cluster out first: a failing run's trace is printed."""

    async def run(cluster: SimCluster) -> None:
        clusters.append(cluster)
        await scenario(cluster)

    return run


if __name__ == "__main__":
    sys.exit(main())
