"""Long simulation runs: many seeds of the faulty workload on the deterministic simulator.

    python scripts/simulate.py --seeds 10000 [--first 0] [--duration 8] [--think 0]
        [--voters N] [--observers N] [--no-swarm] [--adapt] [--prior FILE]

Each seed runs a whole ensemble (the real server code on virtual time, simulated links and disks)
under the nemesis's faults (zkpy/testing/workload.py FAULTS: crashes, restarts, partitions,
one-way cuts, swizzle-clogging, whole-quorum power cuts, failing, slow and full disks, failing
snapshot, epoch and marker writes, delay spikes, process pauses, connection resets, a client's
session expiring mid-request), faults at protocol points (zkpy/testing/nemesis.py Buggify) and
conjunction faults aimed at rare preconditions (zkpy/testing/conjunctions.py) while clients write, then heals, checks liveness, every invariant (zkpy/testing/cluster.py) and
the clients' histories. Each seed draws its configuration (cluster.swarm: tick, limits,
snapCount, commitLogCount, voters, observers, which faults); --voters/--observers override the
draw, --no-swarm runs the fixed configuration CI's fixed seeds use (3 voters unless given).

Printed at the end: the faults injected by kind, and how often each protocol point kind and each
rare conjunction was reached (zkpy/testing/nemesis.py Reach), and how often each conjunction fault
acted and the preconditions it aims at were met (the "fault: ..." lines and the three after them). --adapt weighs Buggify's faults by
the mean counts of the seeds run before (rarely reached points get more); a failing seed's
weights are then written to a file to replay it with --prior FILE. A failing seed is printed with
its error and the run's event trace; re-run it alone with `--first SEED --seeds 1` (plus the
same --voters/--no-swarm/--prior). CI runs a few hundred seeds through
tests/replication/test_simulation.py.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zkpy.testing.cluster import SimCluster, simulate, swarm
from zkpy.testing.conjunctions import CONJUNCTION_FAULTS
from zkpy.testing.nemesis import CONJUNCTIONS
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
    parser.add_argument("--voters", type=int, default=None, help="override the seed's draw")
    parser.add_argument("--observers", type=int, default=None, help="override the seed's draw")
    parser.add_argument("--no-swarm", action="store_true", help="the fixed configuration (3 voters, ...)")
    parser.add_argument("--adapt", action="store_true", help="weigh point faults by earlier seeds' counts")
    parser.add_argument("--prior", type=Path, default=None, help="point-kind weights (JSON) to replay with")
    args = parser.parse_args()
    prior: dict[str, float] = json.loads(args.prior.read_text()) if args.prior else {}
    points: Counter[str] = Counter()
    conjunctions: Counter[str] = Counter()
    buggified: Counter[str] = Counter()
    snapshots_checked = runs = 0
    logging.disable(logging.ERROR)  # the servers log the injected faults (disk errors) at ERROR
    started = time.monotonic()
    failures: list[int] = []
    committed = acknowledged = epochs = expired = 0
    faults: Counter[str] = Counter()
    for seed in range(args.first, args.first + args.seeds):
        clusters: list[SimCluster] = []
        options: dict[str, object] = {} if args.no_swarm else swarm(seed, list(FAULTS))
        if args.voters is not None:
            options["voters"] = args.voters
        if args.observers is not None:
            options["observers"] = args.observers
        seed_prior = dict(prior)
        try:
            simulate(seed, _keep(clusters, faulty_scenario(args.duration, args.think, seed_prior)), **options)
        except Exception:
            failures.append(seed)
            print(f"seed {seed} FAILED:\n{traceback.format_exc()}", flush=True)
            if clusters:
                print("trace:\n" + "\n".join(clusters[0].events), flush=True)
            if seed_prior:
                saved = Path(f"sim-prior-{seed}.json")
                saved.write_text(json.dumps(seed_prior))
                print(f"replay: --first {seed} --seeds 1 --prior {saved}", flush=True)
            continue
        cluster = clusters[0]
        runs += 1
        points.update(cluster.reach.points)
        conjunctions.update(cluster.reach.conjunctions)
        snapshots_checked += cluster.invariants.snapshots_checked
        if cluster.buggify is not None:
            buggified.update(cluster.buggify.done)
        if args.adapt:
            prior = {kind: count / runs for kind, count in points.items()}
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
    print(f"{snapshots_checked} snapshots checked against the committed history")
    print("rare conjunctions reached:")
    for name in CONJUNCTIONS + CONJUNCTION_FAULTS:
        print(f"  {conjunctions[name]:7} {name}")
    print(f"protocol points reached (kind: times; buggify faults there, {buggified.total()} in all):")
    at_kind: Counter[str] = Counter()
    for key, count in buggified.items():
        at_kind[key.rsplit(": ", 1)[0]] += count
    for kind, count in sorted(points.items(), key=lambda item: item[1]):
        print(f"  {count:9} {at_kind[kind]:5}  {kind}")
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
