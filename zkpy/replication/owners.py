"""Which server each session's client is on, as the leader sees it (Apache's session owner), and
how a server that never served the session after all gives its claim back.

Why owners: a write sent through a server the client then left could reach the leader after a
write the client made through the next server, and be applied after it: FIFO client order
broken. So the server a client resumes its session on asks the leader first (a revalidation),
which makes it the owner, and a request forwarded by any other server is refused with
SessionMoved (ensemble safety, item 4).

The liveness hole this module closes: claims from different servers are not ordered with each
other; only the client knows which of its connects came last. A client that gives up on F1
while F1's question is slow to reach the leader, and resumes its session on F2, has F2 as the
owner, until F1's late question arrives and makes F1 the owner: every write through F2 is then
refused until the client reconnects for another reason (the Jepsen run in docs/measurements.md,
"SessionMoved for every write through s3 for 15 s"). So the leader keeps each session's claims in
the order it took them, and the owner is the server of the newest claim still standing; a
learner whose claim was for a connection that closed without forwarding a single request
withdraws it ("relinquish", on the same FIFO link as its question), and the owner falls back to
the claim before it.

Why withdrawing such a claim is safe. Take a write W1 the client sent on connection c through
server L, then a write W2 it made, acknowledged, on a later connection d through M. W2 was
forwarded, so d's claim is never withdrawn (only claims of connections that forwarded nothing
are), and it was taken after c's (c's claim was answered before the client could send W1, and
the client left c before connecting d). For W1 to be applied after W2, an L claim must stand
after d's when W1 arrives (d's, or newer ones if it was dropped as old, still stand), hence
have been taken after d's; every L claim asked after c's was
asked for a connect at L that closed c first (a server closes a session's other connection
before it asks, EnsembleServer.resume_session), so W1, read on c before that, is ahead of the
question on L's link and reaches the leader before that claim stands. No such claim: W1 is
refused. (With L = M the same holds: d's question closed c. With L the leader there is no
link: W1 is checked as it is read, and a later connect there closes c first.) Withdrawing
only ever removes claims: it never puts one back in front of a claim that forwarded something.
A relinquish of the only claim left is ignored (the owner stays): with no claim at all the
first server to ask would take the session, which a late write from a server the client left
could be.

Apache 3.8 differs: Leader.revalidateSession makes the asking LearnerHandler the owner
(SessionTrackerImpl.setOwner, unconditionally: the last REVALIDATE to reach the leader wins),
checkSession refuses any other owner, and nothing tells the leader a handshake was abandoned.
So Apache keeps the liveness hole. The peer protocol here is zkpy's own: a learner of an older
release never sends a relinquish and the leader acts as before with it, but a leader of an older
release takes a relinquish for a protocol error and drops that learner's link (it reconnects and
syncs), as a learner of a release before streamed SNAPs does a SnapshotChunk: the members of
one ensemble should run one release.

A learner's link can break between its question and its relinquish (a slow link is the one
likely to break), and the relinquish is then lost with it. So the leader does, on that link's
behalf, what its relinquishes would have done: when it drops a learner's link it withdraws the
link's claims it ordered nothing under (drop_link). It knows which those are better than the
learner: a forwarded request passes check() under the newest claim, which it marks used, and a
request still on a dropped link is never ordered. The same argument as above holds for them.

Owners are per leader and in memory, as Apache's: a new leader starts with none and a session
belongs to the first server to forward for it. Every learner closes its clients when its
leader changes, so each of them resumes through a revalidation (a claim) before it forwards; a
relinquish goes on the link its question went on, so it only ever reaches the leader that took
the claim. The leader's own connections claim at once (no question), keyed by the connection:
a client's ConnectRequest can reach the leader after the client gave up on it (held, or
retransmitted after a silent drop) and resumed its session elsewhere, so the leader withdraws
its own claim when that connection closes having ordered nothing, as a learner's relinquish
does (a Jepsen run before this had SessionMoved for 12 s). createSessions claim for good. There are no local sessions outside read-only mode,
where nothing is forwarded.
"""

from __future__ import annotations

from collections.abc import Hashable

# The newest claims kept per session. Dropping older ones is safe: a relinquish only ever
# uncovers a claim still kept, which is newer than every dropped one.
MAX_CLAIMS = 8


class SessionOwners:
    """Per session, the claims the leader took, oldest first: (server id, key). A learner's
    revalidation has a key (its link and the question's number on it) by which it can be
    withdrawn; a claim without one (the leader's own connection, a createSession, the first
    forward after an election) stands until newer claims pass it."""

    def __init__(self, max_claims: int = MAX_CLAIMS) -> None:
        self.max_claims = max_claims
        self._claims: dict[int, list[tuple[int, Hashable]]] = {}
        self._used: dict[int, set[Hashable]] = {}  # per session: keys a request was ordered under
        self._by_link: dict[Hashable, set[int]] = {}  # sessions a link has claimed (for drop_link)

    def __len__(self) -> int:
        return len(self._claims)

    def owner(self, session_id: int) -> int | None:
        claims = self._claims.get(session_id)
        return claims[-1][0] if claims else None

    def claim(self, session_id: int, sid: int, key: Hashable = None) -> None:
        """Server `sid` has the session's client now (its revalidation, createSession, or the
        leader's own connection): it is the owner."""
        claims = self._claims.setdefault(session_id, [])
        claims.append((sid, key))
        if isinstance(key, tuple) and key:
            self._by_link.setdefault(key[0], set()).add(session_id)
        if len(claims) > self.max_claims:
            _, dropped = claims.pop(0)
            used = self._used.get(session_id)
            if used is not None:
                used.discard(dropped)

    def check(self, session_id: int, sid: int) -> bool:
        """May a request forwarded by `sid` be ordered? A session with no claim yet (this leader
        is new) belongs to the first server to ask, as Apache's checkSession."""
        claims = self._claims.get(session_id)
        if not claims:
            self.claim(session_id, sid)
            return True
        owner, key = claims[-1]
        if owner != sid:
            return False
        if key is not None:
            self._used.setdefault(session_id, set()).add(key)  # never withdrawn from now on
        return True

    def relinquish(self, session_id: int, sid: int, key: Hashable) -> bool:
        """Learner `sid` withdraws its claim `key`: the connection it asked for closed without
        forwarding anything. The owner is the newest claim left. False when there was nothing
        to withdraw (the question found the session dead, the claim was dropped as old, or it
        is the only one left)."""
        claims = self._claims.get(session_id)
        if key is None or not claims or len(claims) < 2 or key in self._used.get(session_id, ()):
            return False
        for i in range(len(claims) - 1, -1, -1):
            if claims[i] == (sid, key):
                del claims[i]
                return True
        return False

    def drop_link(self, link: Hashable) -> int:
        """The leader dropped learner link `link`: its claims (keys (link, question)) that no
        request was ordered under are withdrawn, as its relinquishes, lost with it, would have
        (never the last claim of a session). How many went. Only the sessions the link claimed
        are looked at (a leader with a million sessions drops links without a pause)."""
        withdrawn = 0
        for session_id in self._by_link.pop(link, ()):
            claims = self._claims.get(session_id)
            if claims is None:
                continue
            used = self._used.get(session_id, ())
            for i in range(len(claims) - 1, -1, -1):
                if len(claims) < 2:
                    break
                key = claims[i][1]
                if isinstance(key, tuple) and key and key[0] == link and key not in used:
                    del claims[i]
                    withdrawn += 1
        return withdrawn

    def forget(self, session_id: int) -> None:
        """The session is closed."""
        for _, key in self._claims.pop(session_id, ()):
            if isinstance(key, tuple) and key:
                sessions = self._by_link.get(key[0])
                if sessions is not None:
                    sessions.discard(session_id)
                    if not sessions:
                        del self._by_link[key[0]]
        self._used.pop(session_id, None)
