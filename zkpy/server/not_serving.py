"""A client port with no server behind it yet (an ensemble member electing or syncing): it answers
four-letter words as Apache ZooKeeper 3.8 does then, and closes client sessions.

Apache accepts the connection and runs the word: `ruok` says imok, `isro` says null, `envi` answers,
and the words that read the server's state say "This ZooKeeper instance is not currently serving
requests". Closing without a word would make `zkpy status`, `ruok` probes and monitoring see a dead
server where there is one waiting for its peers. A session's ConnectRequest is closed, so the
client tries another server, as Apache's "ZooKeeperServer not running" does.
"""

from __future__ import annotations

import trio

from zkpy.server import fourletter
from zkpy.server.config import ServerConfig
from zkpy.server.protocol import FOUR_LETTER_WORDS

FIRST_BYTES_TIMEOUT = 5.0  # a client sends its handshake or word at once; a silent one is dropped


async def answer_while_not_serving(stream: trio.abc.Stream, config: ServerConfig, state: str) -> None:
    """Read the first four bytes; answer a four-letter word, then close in every case."""
    head = b""
    with trio.move_on_after(FIRST_BYTES_TIMEOUT):
        try:
            while len(head) < 4:
                data = await stream.receive_some(4 - len(head))
                if not data:
                    break
                head += data
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
    word = head.decode("latin-1")
    try:
        if word in FOUR_LETTER_WORDS:
            status = fourletter.ServerStatus(state=state, serving=False)
            answer = fourletter.respond(word, status, config.four_letter_whitelist)
            if answer:
                await stream.send_all(answer.encode())
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await stream.aclose()
