"""The session cache: one database read per session at a time, re-checked before it expires.

The cache is given a clock the tests move and a loader that stands for the session read
(the HTTP test in ``test_auth.py`` counts the real database's reads).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from services.api.auth import SessionCache, User
from services.contract.envelope import utc_now

TTL = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Loader:
    """Answers the session read with ``user``, once ``release`` is set; counts the reads."""

    def __init__(self, user: User | None) -> None:
        self.user = user
        self.reads = 0
        self.release = asyncio.Event()
        self.release.set()
        self.error: Exception | None = None

    async def __call__(self) -> User | None:
        self.reads += 1
        await self.release.wait()
        if self.error is not None:
            raise self.error
        return self.user


def alice(sid: str = "s1") -> User:
    return User(id=1, username="alice", provider="native", sid=sid,
                session_expires=utc_now() + timedelta(days=1))


async def settled() -> None:
    """Let the background reads started so far finish."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_requests_that_find_no_entry_share_one_read() -> None:
    cache, load = SessionCache(TTL, clock=Clock()), Loader(alice())
    load.release.clear()
    waiting = [asyncio.create_task(cache.user("s1", 1, load)) for _ in range(32)]
    await settled()
    load.release.set()
    users = await asyncio.gather(*waiting)
    assert load.reads == 1
    assert {u.username for u in users if u is not None} == {"alice"}
    assert await cache.user("s1", 1, load) is load.user and load.reads == 1  # cached now


async def test_an_entry_past_half_its_ttl_is_read_again_in_the_background() -> None:
    clock = Clock()
    cache, load = SessionCache(TTL, clock=clock), Loader(alice())
    await cache.user("s1", 1, load)
    clock.now += TTL * 0.4
    assert await cache.user("s1", 1, load) is not None and load.reads == 1
    clock.now += TTL * 0.2  # 0.6 ttl old: served from memory, and one re-check starts
    load.release.clear()
    served = await asyncio.gather(*(cache.user("s1", 1, load) for _ in range(10)))
    assert all(u is not None for u in served) and load.reads == 2
    load.release.set()
    await settled()
    clock.now += TTL * 0.9  # 1.5 ttl after the first read, 0.9 after the re-check
    assert await cache.user("s1", 1, load) is not None and load.reads == 2


async def test_a_session_revoked_elsewhere_ends_at_the_re_check() -> None:
    clock = Clock()
    cache, load = SessionCache(TTL, clock=clock), Loader(alice())
    await cache.user("s1", 1, load)
    load.user = None  # logged out through another API process
    clock.now += TTL * 0.6
    assert await cache.user("s1", 1, load) is not None  # within its ttl: still trusted
    await settled()
    assert await cache.user("s1", 1, load) is None
    assert load.reads == 3  # the re-check found it ended; the next request read again


async def test_an_expired_entry_is_not_served() -> None:
    clock = Clock()
    cache, load = SessionCache(TTL, clock=clock), Loader(alice())
    await cache.user("s1", 1, load)
    load.user = None
    clock.now += TTL * 1.01
    assert await cache.user("s1", 1, load) is None and load.reads == 2


async def test_a_logout_here_is_not_undone_by_a_read_that_began_before_it() -> None:
    clock = Clock()
    cache, load = SessionCache(TTL, clock=clock), Loader(alice())
    await cache.user("s1", 1, load)
    clock.now += TTL * 0.6
    load.release.clear()
    assert await cache.user("s1", 1, load) is not None  # starts a re-check, held back
    cache.drop("s1")  # logout through this process while the re-check reads
    load.release.set()  # the read saw the session before its revocation committed
    await settled()
    load.user = None
    assert await cache.user("s1", 1, load) is None  # read again, not the stale answer


async def test_a_failed_re_check_keeps_the_entry_until_its_ttl() -> None:
    clock = Clock()
    cache, load = SessionCache(TTL, clock=clock), Loader(alice())
    await cache.user("s1", 1, load)
    load.error = ConnectionError("database unreachable")
    clock.now += TTL * 0.6
    assert await cache.user("s1", 1, load) is not None
    await settled()
    assert await cache.user("s1", 1, load) is not None  # still within its ttl
    clock.now += TTL * 0.5
    with pytest.raises(ConnectionError):
        await cache.user("s1", 1, load)


async def test_every_request_reads_with_the_cache_off() -> None:
    cache, load = SessionCache(0.0, clock=Clock()), Loader(alice())
    for _ in range(3):
        assert await cache.user("s1", 1, load) is not None
    assert load.reads == 3
