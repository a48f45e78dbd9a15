"""The leader's session owners (owners.py): the newest claim standing owns the session, and a
withdrawn claim hands it back to the one before it, never to one older than a claim kept."""

from __future__ import annotations

from zkpy.replication.owners import SessionOwners

S = 0x1234


def test_the_newest_claim_owns_the_session_and_others_are_refused() -> None:
    owners = SessionOwners()
    owners.claim(S, 1)  # createSession through server 1
    assert owners.owner(S) == 1 and owners.check(S, 1) and not owners.check(S, 2)
    owners.claim(S, 2, (20, 1))  # server 2's revalidation: question 1 on link 20
    assert owners.owner(S) == 2 and not owners.check(S, 1)


def test_a_session_without_claims_belongs_to_the_first_server_to_ask() -> None:
    """A new leader knows no owners (as Apache's checkSession with a null owner)."""
    owners = SessionOwners()
    assert owners.check(S, 3) and not owners.check(S, 1) and owners.owner(S) == 3


def test_a_late_claim_withdrawn_gives_the_session_back_to_the_server_the_client_is_on() -> None:
    """The liveness case: F1's question reaches the leader after F2's, for a connection the
    client gave up on. Fails before this change: nothing could give a claim back."""
    owners = SessionOwners()
    owners.claim(S, 1)
    owners.claim(S, 2, (20, 1))  # F2: the client is there
    owners.claim(S, 1, (10, 1))  # F1's late question
    assert owners.owner(S) == 1
    assert owners.relinquish(S, 1, (10, 1))
    assert owners.owner(S) == 2 and owners.check(S, 2)


def test_a_withdrawn_claim_in_the_middle_leaves_the_newest_owner() -> None:
    """Only that claim goes: one taken after it still owns the session, and the claim before
    it does not come back (its server may hold a write the client sent before it moved)."""
    owners = SessionOwners()
    owners.claim(S, 1, (10, 1))
    owners.claim(S, 2, (20, 1))
    owners.claim(S, 3, (30, 1))
    assert owners.relinquish(S, 2, (20, 1))
    assert owners.owner(S) == 3
    assert owners.relinquish(S, 3, (30, 1))
    assert owners.owner(S) == 1


def test_only_the_named_claim_of_that_server_is_withdrawn() -> None:
    """A server's claims are told apart by their link and question: withdrawing an older one
    leaves its newer claim (for the connection the client is on) in force."""
    owners = SessionOwners()
    owners.claim(S, 1)
    owners.claim(S, 2, (20, 1))
    owners.claim(S, 2, (20, 2))
    assert owners.relinquish(S, 2, (20, 1))
    assert owners.owner(S) == 2
    assert not owners.relinquish(S, 2, (20, 1))  # already gone
    assert not owners.relinquish(S, 2, (21, 2))  # another link's question 2: not this claim
    assert not owners.relinquish(S, 3, (20, 2))  # nor another server's
    assert owners.owner(S) == 2


def test_claims_without_a_key_and_the_last_claim_are_never_withdrawn() -> None:
    """The leader's own connection, a createSession and a first forward cannot be abandoned
    halfway; and with no claim left, the first server to forward would take the session,
    which could be one the client left with a write on its way."""
    owners = SessionOwners()
    owners.claim(S, 3)
    assert not owners.relinquish(S, 3, None)
    owners.forget(S)
    owners.claim(S, 2, (20, 1))
    assert not owners.relinquish(S, 2, (20, 1))
    assert owners.owner(S) == 2
    assert not owners.relinquish(S + 1, 2, (20, 1))  # a session it knows nothing of


def test_only_the_newest_claims_are_kept_and_a_withdrawal_never_reaches_past_them() -> None:
    owners = SessionOwners(max_claims=3)
    owners.claim(S, 1)  # dropped below: server 1 never owns the session again by withdrawals
    for question in (1, 2, 3):
        owners.claim(S, 2 + question, (20, question))
    assert owners.relinquish(S, 5, (20, 3)) and owners.relinquish(S, 4, (20, 2))
    assert owners.owner(S) == 3
    assert not owners.relinquish(S, 3, (20, 1))  # the last one left stays
    assert owners.owner(S) == 3


def test_a_closed_session_is_forgotten() -> None:
    owners = SessionOwners()
    owners.claim(S, 1)
    owners.forget(S)
    assert owners.owner(S) is None and len(owners) == 0


def test_a_dropped_links_claims_nothing_was_ordered_under_are_withdrawn() -> None:
    """A learner's link breaks between its late question and its relinquish: the leader drops
    the link's unused claims itself (test_sim_claims_adversarial has the whole case). Fails on
    e8388aa: SessionOwners has no drop_link."""
    owners = SessionOwners()
    owners.claim(S, 1)
    owners.claim(S, 2, (20, 1))  # F2: the client is there
    owners.claim(S, 1, (10, 1))  # F1's late question, on link 10
    assert owners.drop_link(10) == 1
    assert owners.owner(S) == 2 and owners.check(S, 2)


def test_a_claim_a_request_was_ordered_under_survives_its_links_drop_and_any_relinquish() -> None:
    """Item 4's rule, on the leader's side: check() marks the claim a request passes under, and
    neither drop_link nor a relinquish takes that one; the last claim is never dropped either."""
    owners = SessionOwners()
    owners.claim(S, 1, (10, 1))
    owners.claim(S, 2, (20, 1))
    assert owners.check(S, 2)  # a write through F2, ordered under (20, 1)
    owners.claim(S, 3, (30, 1))
    assert owners.drop_link(20) == 0 and not owners.relinquish(S, 2, (20, 1))
    assert owners.drop_link(30) == 1 and owners.owner(S) == 2
    other = SessionOwners()
    other.claim(S, 1, (10, 1))
    assert other.drop_link(10) == 0 and other.owner(S) == 1


def test_drop_link_looks_only_at_the_sessions_that_link_claimed() -> None:
    """A leader with many sessions drops a learner's link without a pass over all of them, and
    keeps no index entry for a closed session (a guard for the index)."""
    owners = SessionOwners()
    for session in range(1000):
        owners.claim(session, 1)
        owners.claim(session, 2, (20, session + 1))
    owners.claim(S, 1)
    owners.claim(S, 3, (30, 1))
    owners.forget(S)
    assert 30 not in owners._by_link
    assert owners.drop_link(30) == 0
    assert owners.drop_link(20) == 1000 and all(owners.owner(s) == 1 for s in range(1000))
    assert owners._by_link == {}
