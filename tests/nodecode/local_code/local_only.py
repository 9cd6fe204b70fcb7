"""A module only the test node can import (tests/test_migration_safety.py puts this folder on its path)."""

from safety_migrants import attempt, serve


async def wanders(reply_to, node):
    await attempt(reply_to, node)
    await serve()
