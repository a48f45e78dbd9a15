"""ZAB's two persisted epochs: acceptedEpoch (the newest epoch this server promised to follow)
and currentEpoch (the epoch whose leader it last synced with).

They must survive kill -9 and never go back: each is written to a temp file, fsynced, renamed
over the old one, and the directory fsynced, so a crash leaves either the old or the new value.
Apache ZooKeeper uses the same file names; ours live in zkpy's own data subdirectory.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

ACCEPTED = "acceptedEpoch"
CURRENT = "currentEpoch"


class EpochFileError(ValueError):
    """An epoch file that is not a number: refuse to start rather than guess an epoch."""


def read_epoch(directory: Path, name: str) -> int:
    path = directory / name
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return 0
    try:
        value = int(text)
    except ValueError:
        raise EpochFileError(f"{path} holds {text[:40]!r}, not an epoch number") from None
    if value < 0:
        raise EpochFileError(f"{path} holds a negative epoch {value}")
    return value


def write_epoch(directory: Path, name: str, value: int) -> None:
    path = directory / name
    tmp = directory / f"{name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, f"{value}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class Epochs:
    """The two epochs of one server, cached in memory, persisted before any change is relied on.

    `load(name)` and `save(name, value)` reach the storage: files in a directory in production
    (`in_directory`), a simulated disk under zkpy.testing."""

    def __init__(self, load: Callable[[str], int], save: Callable[[str, int], None], where: str = "") -> None:
        self._save = save
        self.accepted = load(ACCEPTED)
        self.current = load(CURRENT)
        if self.current > self.accepted:  # written in this order; a crash between leaves current <= accepted
            raise EpochFileError(
                f"{where}: currentEpoch {self.current} is ahead of acceptedEpoch {self.accepted}"
            )

    @classmethod
    def in_directory(cls, directory: Path) -> Epochs:
        return cls(
            lambda name: read_epoch(directory, name),
            lambda name, value: write_epoch(directory, name, value),
            str(directory),
        )

    def accept(self, epoch: int) -> None:
        if epoch < self.accepted:
            raise ValueError(f"acceptedEpoch would go back from {self.accepted} to {epoch}")
        if epoch != self.accepted:
            self._save(ACCEPTED, epoch)
            self.accepted = epoch

    def make_current(self, epoch: int) -> None:
        if epoch < self.current:
            raise ValueError(f"currentEpoch would go back from {self.current} to {epoch}")
        self.accept(epoch)
        if epoch != self.current:
            self._save(CURRENT, epoch)
            self.current = epoch
