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
