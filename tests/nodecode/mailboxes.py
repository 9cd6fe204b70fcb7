"""Process bodies for the mailbox tests (tests/test_mailbox_info.py), importable by every node."""

import termite


async def hoard():
    """Never takes a message but "stop": everything else stays in its mailbox."""
    await termite.receive("stop")
