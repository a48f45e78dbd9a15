"""What a role's failure means (link.why_role_ended), for the exception groups trio's nurseries
raise when more than one task of a role fails at once."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from zkpy.replication.link import why_role_ended
from zkpy.replication.roles import RoleEnded
from zkpy.storage.errors import StorageError


def _ctx() -> Any:
    return SimpleNamespace(disk_failed=None)


def test_a_failed_log_write_keeps_the_server_out_of_elections_even_when_the_role_ended_first() -> None:
    """The leader's driver ends the role (RoleEnded: the quorum is lost) while the log writer's
    fsync, in a thread no cancellation stops, fails: the role's nursery raises both, the
    RoleEnded first. The disk failed all the same: the server must wait for it out of elections,
    as it did when the pipeline caught its own StorageError (0042bde). Fails before this change:
    the group's first error alone was looked at, and disk_failed stayed None (the server voted,
    and could lead, with a log that refuses every write)."""
    ctx = _ctx()
    group = BaseExceptionGroup("role", [RoleEnded("lost the quorum"), StorageError("fsync: EIO")])
    ended = why_role_ended(group, ctx, "leading failed")
    assert isinstance(ended, RoleEnded)
    assert ctx.disk_failed == "fsync: EIO"


def test_a_storage_error_inside_a_nested_group_is_found() -> None:
    """As above, the failed write deeper in the group (fails before this change too)."""
    ctx = _ctx()
    inner = ExceptionGroup("serve_role", [StorageError("ENOSPC")])
    ended = why_role_ended(BaseExceptionGroup("role", [RoleEnded("x"), inner]), ctx, "leading failed")
    assert isinstance(ended, RoleEnded) and ctx.disk_failed == "ENOSPC"


def test_a_broken_invariant_is_never_turned_into_a_role_end() -> None:
    """A guard of the order of the rules, not a regression: the AssertionError of a broken
    invariant still wins over a failed disk (passes before and after this change)."""
    ctx = _ctx()
    bug = AssertionError("logged 0x5: not a batch in flight")
    assert why_role_ended(BaseExceptionGroup("role", [bug, StorageError("EIO")]), ctx, "x") is bug
