"""Authentication: cookies, tokens, sessions, Keycloak, rate limit, shared secrets."""

from __future__ import annotations

import asyncio
import os
import stat
from datetime import timedelta
from typing import Any

import jwt
import pytest
from sqlalchemy import event

from services.api.auth import SECRETS, SECRETS_FILE
from services.api.common import ENGINE
from services.contract.envelope import utc_now
from tests.api.conftest import Realm, Stack, api_settings, call, running_stack

pytestmark = pytest.mark.kafka


async def test_hello_and_docs(stack: Stack) -> None:
    session = stack.client()
    assert await call(session, "GET", "/") == (200, {"message": "Hello World!"})
    async with session.get("/openapi.yaml") as resp:
        assert resp.status == 200 and "openapi: 3.1.0" in await resp.text()
    async with session.get("/docs") as resp:
        assert resp.status == 200 and "/jobs/direct" in await resp.text()
    async with session.get("/no/such/route") as resp:
        assert resp.status == 404 and (await resp.json())["message"] == "Not found"
    async with session.patch("/jobs") as resp:
        assert resp.status == 405 and "Allow" in resp.headers


async def test_register_login_status_logout(stack: Stack) -> None:
    session = stack.client()
    creds = {"username": "alice", "password": "secret"}
    created = await call(session, "PUT", "/auth/register", json=creds)
    assert created == (201, {"message": "User created"})
    existing = await call(session, "PUT", "/auth/register", json=creds)
    assert existing == (403, {"message": "User existing"})
    status, body = await call(session, "PUT", "/auth/register", json={**creds, "x": 1})
    assert status == 400 and body["message"] == "Wrong data provided"
    status, body = await call(session, "POST", "/auth/login", json={})
    assert (status, body) == (400, {"message": "No JSON in body"})
    status, body = await call(session, "POST", "/auth/login", json={"username": "alice"})
    assert status == 400
    assert body["message"] == "Missing keys in JSON payload: {&#x27;password&#x27;}"
    assert (await call(session, "POST", "/auth/login",
                       json={"username": "alice", "password": "nope"}))[0] == 401
    async with session.post("/auth/login", json=creds) as resp:
        assert resp.status == 202
        body = await resp.json()
        assert set(body) == {"message", "access_exp", "refresh_exp"}
        assert body["message"] == "Successfully logged in"
        cookies = resp.headers.getall("Set-Cookie")
    access = next(c for c in cookies if c.startswith("access_token="))
    for attribute in ("HttpOnly", "Path=/", "SameSite=Lax", "expires="):
        assert attribute.lower() in access.lower()
    assert any(c.startswith("refresh_token=") for c in cookies)
    assert await call(session, "GET", "/auth/status") == (
        200, {"message": "User status", "username": "alice"})
    status, body = await call(session, "GET", "/auth/refresh")
    assert status == 200 and set(body) == {"message", "access_exp"}
    token = session.cookie_jar.filter_cookies(stack.server.make_url("/"))["access_token"].value
    assert await call(session, "DELETE", "/auth/logout") == (200, {"message": "User logged out"})
    assert (await call(session, "GET", "/auth/status"))[0] == 401
    # The revoked session's token is refused even if replayed.
    status, _ = await call(stack.client(), "GET", "/auth/status", cookies={"access_token": token})
    assert status == 403


async def test_bad_tokens(stack: Stack) -> None:
    session = await stack.user()
    jar = session.cookie_jar.filter_cookies(stack.server.make_url("/"))
    access, refresh = jar["access_token"].value, jar["refresh_token"].value
    claims = jwt.decode(access, options={"verify_signature": False})
    secrets = stack.app[SECRETS]
    anon = stack.client()
    assert await call(anon, "GET", "/auth/status") == (401, {"message": "No token provided"})
    expired = jwt.encode({**claims, "exp": int((utc_now() - timedelta(minutes=1)).timestamp())},
                         secrets.access, algorithm="HS256")
    assert await call(anon, "GET", "/auth/status", cookies={"access_token": expired}) == (
        403, {"message": "Refresh access token. Signature expired."})
    forged = jwt.encode(claims, "not-the-secret-" + "x" * 40, algorithm="HS256")
    assert await call(anon, "GET", "/auth/status", cookies={"access_token": forged}) == (
        403, {"message": "Refresh access token. Invalid token."})
    assert (await call(anon, "GET", "/auth/status", cookies={"access_token": refresh}))[0] == 403
    # An access token signed with the right key but marked as a refresh token is refused too.
    as_refresh = jwt.encode({**claims, "typ": "refresh"}, secrets.access, algorithm="HS256")
    assert (await call(anon, "GET", "/auth/status", cookies={"access_token": as_refresh}))[0] == 403
    assert (await call(anon, "GET", "/auth/refresh", cookies={"refresh_token": access}))[0] == 403
    assert (await call(anon, "GET", "/auth/refresh"))[0] == 401


async def test_login_rate_limit(stack: Stack) -> None:
    session = await stack.user("mallory-target")
    for _ in range(stack.api.login_max_failures):
        status, _ = await call(session, "POST", "/auth/login",
                               json={"username": "mallory-target", "password": "wrong"})
        assert status == 401
    async with session.post("/auth/login", json={"username": "mallory-target",
                                                  "password": "pw-mallory-target"}) as resp:
        assert resp.status == 429


async def test_keycloak(stack: Stack, realm: Realm) -> None:
    session = stack.client()
    token = realm.token("plgalice")
    status, body = await call(session, "POST", "/auth/keycloak", json={"username": "someone-else"},
                              headers={"Authorization": f"Bearer {token}"})
    assert status == 202 and set(body) == {"message", "access_exp"}
    # The user name is the token's, never the body's.
    assert (await call(session, "GET", "/auth/status"))[1]["username"] == "plgalice"
    status, body = await call(session, "GET", "/clusters")
    assert status == 200 and body["clusters"] == [{"cluster_name": "ares"},
                                                  {"cluster_name": "athena"}]

    async def login(token: str) -> tuple[int, str]:
        status, body = await call(stack.client(), "POST", "/auth/keycloak", json={},
                                  headers={"Authorization": f"Bearer {token}"})
        return status, body["message"]

    assert (await call(stack.client(), "POST", "/auth/keycloak", json={}))[0] == 401
    assert await login(realm.token("plgbob", lifetime=-60)) == (403, "Signature expired")
    assert await login(realm.token("plgbob", audience="other")) == (403, "Invalid token")
    assert await login(realm.token("plgbob", issuer="https://evil/auth/realms/test")) == (
        403, "Invalid token")
    assert await login(realm.token("plgbob", services=[])) == (
        403, "User plgbob has no access to our service")
    realm.add_key("unpublished", publish=False)
    assert await login(realm.token("plgbob", kid="unpublished")) == (403, "Invalid token")
    # Same kid as a published key, other private key: the signature does not verify.
    realm.keys["k1-impostor"] = realm.keys["unpublished"]
    forged = realm.token("plgbob", kid="unpublished").replace(
        jwt.get_unverified_header(realm.token("plgbob", kid="unpublished"))["kid"], "k1")
    assert (await login(forged))[0] == 403
    # A rotated-in key is fetched on first sight of its kid.
    from services.api.auth import KEYCLOAK

    stack.app[KEYCLOAK].min_refetch_seconds = 0
    realm.add_key("k2")
    assert (await login(realm.token("plgbob", kid="k2")))[0] == 202
    password_user = await stack.user()
    assert await call(password_user, "GET", "/clusters") == (
        403, {"message": "User is not allowed to use this endpoint"})


async def test_restart_and_second_process_keep_sessions(stack: Stack, realm: Realm) -> None:
    session = await stack.user("carol")
    cookie = session.cookie_jar.filter_cookies(stack.server.make_url("/"))["access_token"].value
    mode = stat.S_IMODE(os.stat(stack.settings.state_dir / SECRETS_FILE).st_mode)
    assert mode == 0o600
    async with running_stack(stack.settings, api_settings(realm), with_projector=False) as other:
        status, body = await call(other.client(), "GET", "/auth/status",
                                  cookies={"access_token": cookie})
        assert (status, body["username"]) == (200, "carol")


@pytest.mark.parametrize("cache_seconds", [0.0, 60.0], ids=["no-cache", "cached"])
async def test_logout_elsewhere_ends_the_session_within_the_cache_time(
        stack: Stack, realm: Realm, cache_seconds: float) -> None:
    """A second API process trusts a session it checked for ``session_cache_seconds``;
    with the cache off, a logout through the first process ends it there at once."""
    session = await stack.user()
    cookie = session.cookie_jar.filter_cookies(stack.server.make_url("/"))["access_token"].value
    settings = api_settings(realm, session_cache_seconds=cache_seconds)
    async with running_stack(stack.settings, settings, with_projector=False) as other:
        client = other.client()
        assert (await call(client, "GET", "/auth/status",
                           cookies={"access_token": cookie}))[0] == 200
        assert (await call(session, "DELETE", "/auth/logout"))[0] == 200
        status, _ = await call(client, "GET", "/auth/status", cookies={"access_token": cookie})
        assert status == (403 if cache_seconds == 0 else 200)


async def test_requests_of_one_session_read_it_once_when_its_cache_entry_expires(
        stack: Stack, realm: Realm) -> None:
    """When a cached session expires, the requests in flight share one database read.

    Each used to read it on its own: under load, a stall every ``session_cache_seconds``.
    """
    ttl = 0.5
    async with running_stack(stack.settings, api_settings(realm, session_cache_seconds=ttl),
                             with_projector=False) as own:
        session = await own.user()
        reads: list[str] = []

        def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if "FROM api_sessions JOIN api_users" in statement:
                reads.append(statement)

        engine = own.app[ENGINE].sync_engine
        event.listen(engine, "before_cursor_execute", count)
        try:
            await asyncio.sleep(ttl * 1.2)  # what the login cached has expired
            statuses = await asyncio.gather(
                *(call(session, "GET", "/auth/status") for _ in range(32)))
        finally:
            event.remove(engine, "before_cursor_execute", count)
    assert {status for status, _ in statuses} == {200}
    assert len(reads) == 1, f"{len(reads)} session reads for 32 concurrent requests"


async def test_cors(stack: Stack) -> None:
    session = stack.client()
    headers = {"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
               "Access-Control-Request-Headers": "content-type"}
    async with session.options("/jobs/direct", headers=headers) as resp:
        assert resp.status == 200
        assert resp.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
        assert resp.headers["Access-Control-Allow-Credentials"] == "true"
        assert "POST" in resp.headers["Access-Control-Allow-Methods"]
    async with session.get("/", headers={"Origin": "http://localhost:3000"}) as resp:
        assert resp.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    async with session.get("/", headers={"Origin": "https://evil.example"}) as resp:
        assert "Access-Control-Allow-Origin" not in resp.headers
