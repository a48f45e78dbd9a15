"""A running min/avg/max summary, as ZooKeeper's four-letter words and mntr report them."""

from __future__ import annotations


class Summary:
    """Count, sum, min, max and last of a stream of measurements (milliseconds here)."""

    __slots__ = ("count", "last", "max", "min", "total")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.total = self.min = self.max = self.last = 0.0

    def record(self, value: float) -> None:
        if self.count == 0 or value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        self.last = value
        self.total += value
        self.count += 1

    @property
    def avg(self) -> float:
        return self.total / self.count if self.count else 0.0

    def metrics(self, name: str) -> dict[str, int | float | str]:
        """mntr lines in ZooKeeper's summary style: avg_, min_, max_, cnt_, sum_ + name."""
        return {
            f"avg_{name}": round(self.avg, 4),
            f"min_{name}": round(self.min, 4),
            f"max_{name}": round(self.max, 4),
            f"cnt_{name}": self.count,
            f"sum_{name}": round(self.total, 4),
        }


# Upper bounds (ms) of the per-operation latency buckets; one more bucket holds everything above.
BUCKETS_MS = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 10000.0)


class OpLatencies:
    """Response times by request type, as histogram buckets (for the Prometheus endpoint).

    ServerStats.record fills it (a dict lookup, a bisect and two additions per answered request);
    everything else (cumulative buckets, names, totals) is worked out when the endpoint is scraped.
    """

    __slots__ = ("rows",)

    def __init__(self) -> None:
        # op -> counts per bucket of BUCKETS_MS, the overflow bucket, then the sum of all (ms)
        self.rows: dict[int, list[float]] = {}
