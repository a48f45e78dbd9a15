"""ZAB's two persisted epochs: acceptedEpoch (the newest epoch this server promised to follow)
and currentEpoch (the epoch whose leader it last synced with).

They must survive kill -9 and never go back: each is written to a temp file, fsynced, renamed
over the old one, and the directory fsynced, so a crash leaves either the old or the new value.
Apache ZooKeeper uses the same file names; ours live in zkpy's own data subdirectory.
"""

from __future__ import annotations

import os
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
    """The two epochs of one server, cached in memory, persisted before any change is relied on."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.accepted = read_epoch(directory, ACCEPTED)
        self.current = read_epoch(directory, CURRENT)
        if self.current > self.accepted:  # written in this order; a crash between leaves current <= accepted
            raise EpochFileError(
                f"{directory}: currentEpoch {self.current} is ahead of acceptedEpoch {self.accepted}"
            )

    def accept(self, epoch: int) -> None:
        if epoch < self.accepted:
            raise ValueError(f"acceptedEpoch would go back from {self.accepted} to {epoch}")
        if epoch != self.accepted:
            write_epoch(self.directory, ACCEPTED, epoch)
            self.accepted = epoch

    def make_current(self, epoch: int) -> None:
        if epoch < self.current:
            raise ValueError(f"currentEpoch would go back from {self.current} to {epoch}")
        self.accept(epoch)
        if epoch != self.current:
            write_epoch(self.directory, CURRENT, epoch)
            self.current = epoch
