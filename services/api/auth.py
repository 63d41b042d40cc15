"""Users, sessions, tokens and the authentication routes.

Differences from the original, on purpose (reference §9):

* HMAC secrets come from configuration or are generated once into a 0600 file
  under ``state_dir``, so restarts and several API processes share sessions.
* Access, refresh and update keys are signed with three different secrets.
* Every token names a server-side session (``sid``); logout revokes it.
* Passwords are hashed with scrypt (memory-hard); failed logins are rate-limited
  per user and client address.
* Keycloak tokens are verified against the realm's JWKS (cached, refetched on
  an unknown ``kid``) with issuer, audience and expiry checked, and the user
  name comes from the token's ``preferred_username`` claim, never the body.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets as pysecrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import jwt
from aiohttp import web
from sqlalchemy import (
    Boolean,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.api.common import (
    API_SETTINGS,
    ENGINE,
    http_date,
    missing_keys,
    read_json,
    read_object,
)
from services.api.errors import (
    BadRequest,
    Forbidden,
    TooManyRequests,
    Unauthorized,
    reply,
)
from services.contract.envelope import utc_now
from services.projector.readmodel import UTCDateTime
from services.settings import ApiSettings, load_api_settings, load_settings

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

ACCESS_COOKIE = "access_token"
REFRESH_COOKIE = "refresh_token"
SECRETS_FILE = "api-secrets.json"

# --- tables (the API's own metadata, in the read model's database) ------------------------

auth_metadata = MetaData()

users = Table(
    "api_users",
    auth_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("username", String(255), nullable=False),
    Column("provider", String(16), nullable=False),
    Column("password_hash", Text),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("username", "provider", name="uq_api_users_username_provider"),
)

sessions = Table(
    "api_sessions",
    auth_metadata,
    Column("sid", String(64), primary_key=True),
    Column("user_id", Integer, nullable=False, index=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("revoked", Boolean, nullable=False, default=False),
)



# --- secrets ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Secrets:
    """The three HMAC keys: access tokens, refresh tokens, workers' update keys."""

    access: str
    refresh: str
    update: str


def load_secrets(state_dir: Path, api: ApiSettings) -> Secrets:
    """Configured secrets, else the ones generated once into ``state_dir`` (mode 0600).

    The file is created atomically (written under a temporary name, then hard-linked
    into place), so processes starting together agree on one set of secrets.
    """
    path = state_dir / SECRETS_FILE
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        fresh = {k: pysecrets.token_hex(64) for k in ("access", "refresh", "update")}
        tmp = state_dir / f".{SECRETS_FILE}.{os.getpid()}.{pysecrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(fresh, handle)
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):  # another process won the race
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    stored = json.loads(path.read_text())
    return Secrets(
        access=api.access_secret or stored["access"],
        refresh=api.refresh_secret or stored["refresh"],
        update=api.update_secret or stored["update"],
    )


SECRETS = web.AppKey("secrets", Secrets)

# --- passwords ----------------------------------------------------------------------------

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


def hash_password(password: str) -> str:
    """``scrypt$n$r$p$salt$hash`` (hex); about 16 MiB of memory per hash."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R,
                            p=_SCRYPT_P, dklen=32)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str | None) -> bool:
    """Constant-time check; a missing hash still costs one scrypt (no timing oracle)."""
    if not stored:
        hash_password(password)
        return False
    try:
        scheme, n, r, p, salt, expected = stored.split("$")
        if scheme != "scrypt":
            return False
        digest = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n),
                                r=int(r), p=int(p), dklen=len(expected) // 2)
    except ValueError:
        return False
    return hmac.compare_digest(digest.hex(), expected)


# --- users and sessions -------------------------------------------------------------------


@dataclass(frozen=True)
class User:
    """The caller, as found from a valid session."""

    id: int
    username: str
    provider: str
    sid: str
    #: When the session ends (its refresh token's expiry).
    session_expires: datetime | None = None

    @property
    def owner(self) -> str:
        """The ``owner`` written into this user's jobs."""
        return f"{'kc' if self.provider == 'keycloak' else 'u'}:{self.username}"

    @property
    def is_keycloak(self) -> bool:
        return self.provider == "keycloak"


async def create_user(engine: AsyncEngine, username: str, password: str) -> int:
    """Add a password user (also for admin scripts).

    Raises:
        sqlalchemy.exc.IntegrityError: the user name is taken.
    """
    hashed = await asyncio.to_thread(hash_password, password)
    async with engine.begin() as conn:
        result = await conn.execute(insert(users).values(
            username=username, provider="password", password_hash=hashed, created_at=utc_now()))
        return _inserted_id(result)


def _inserted_id(result: Any) -> int:
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


async def _user_id(engine: AsyncEngine, username: str, provider: str) -> int | None:
    async with engine.connect() as conn:
        row = (await conn.execute(select(users.c.id).where(
            users.c.username == username, users.c.provider == provider))).first()
    return None if row is None else int(row.id)


async def _new_session(engine: AsyncEngine, user_id: int, lifetime: int) -> tuple[str, datetime]:
    sid = pysecrets.token_urlsafe(24)
    now = utc_now()
    expires = now + timedelta(seconds=lifetime)
    async with engine.begin() as conn:
        await conn.execute(insert(sessions).values(
            sid=sid, user_id=user_id, created_at=now, expires_at=expires, revoked=False))
    return sid, expires


async def _session_user(engine: AsyncEngine, sid: str, user_id: int) -> User | None:
    async with engine.connect() as conn:
        row = (await conn.execute(
            select(users.c.id, users.c.username, users.c.provider, sessions.c.expires_at)
            .select_from(sessions.join(users, users.c.id == sessions.c.user_id))
            .where(sessions.c.sid == sid, sessions.c.user_id == user_id,
                   sessions.c.revoked.is_(False))
        )).first()
    if row is None or row.expires_at <= utc_now():
        return None
    return User(id=int(row.id), username=row.username, provider=row.provider, sid=sid,
                session_expires=row.expires_at)


SessionLoader = Callable[[], Awaitable[User | None]]


@dataclass
class SessionCache:
    """Sessions found valid in the last few seconds, so a request needs no database read.

    The session check was the only database access on the submit path, and the largest
    cost of a status read. The price: a session revoked by *another* API process (a
    logout there) stays usable here for at most ``ttl`` seconds; one revoked through this
    process is dropped at once. ``ttl`` 0 turns the cache off.

    One read at a time per session: once past half its ``ttl`` an entry is checked again
    in the background while requests go on using it, and the requests that find none
    share one read. Before, every request in flight missed together when an entry
    expired and each read the database: a stall of 150-250 ms every ``ttl`` seconds
    under load, most of ``POST /jobs/direct``'s p99 at concurrency 32.
    """

    ttl: float
    max_entries: int = 100_000
    clock: Callable[[], float] = time.monotonic
    _entries: dict[tuple[str, int], tuple[User, float]] = field(default_factory=dict)
    _reads: dict[tuple[str, int], asyncio.Future[User | None]] = field(default_factory=dict)
    #: Counts :meth:`drop` calls: a read that began before one must not bring back what it
    #: dropped (it may have seen the session before its revocation was committed).
    _drops: int = 0

    async def user(self, sid: str, user_id: int, load: SessionLoader) -> User | None:
        """The session's user, from memory or ``load`` (None: no valid session).

        Raises:
            Whatever ``load`` raises (the database is unreachable), to the requests
                that waited for that read.
        """
        if self.ttl <= 0:
            return await load()
        key = (sid, user_id)
        entry = self._entries.get(key)
        if entry is not None:
            user, checked_at = entry
            age = self.clock() - checked_at
            if user.session_expires is not None and user.session_expires <= utc_now():
                del self._entries[key]
            elif age <= self.ttl:
                if age > self.ttl / 2 and key not in self._reads:
                    self._read(key, load).add_done_callback(_log_failed_refresh)
                return user
            else:
                del self._entries[key]
        read = self._reads.get(key)
        return await asyncio.shield(read if read is not None else self._read(key, load))

    def _read(self, key: tuple[str, int], load: SessionLoader) -> asyncio.Future[User | None]:
        """Start the one read of a session; its result replaces the entry."""
        drops = self._drops

        async def read() -> User | None:
            try:
                user = await load()
            finally:
                del self._reads[key]
            if drops == self._drops:  # no logout here since the read began
                if user is None:
                    self._entries.pop(key, None)
                else:
                    self.put(user)
            return user

        task = asyncio.ensure_future(read())
        self._reads[key] = task
        return task

    def put(self, user: User) -> None:
        if self.ttl <= 0:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()  # bounded memory; the next requests refill it
        self._entries[(user.sid, user.id)] = (user, self.clock())

    def drop(self, sid: str) -> None:
        self._drops += 1
        for key in [k for k in self._entries if k[0] == sid]:
            del self._entries[key]


def _log_failed_refresh(read: asyncio.Future[User | None]) -> None:
    """A background re-check that failed leaves the entry as it was, until its ttl."""
    if not read.cancelled() and read.exception() is not None:
        log.warning("session re-check failed, the cached session stays until it expires: %r",
                    read.exception())


SESSION_CACHE = web.AppKey("session_cache", SessionCache)


async def _revoke(engine: AsyncEngine, sid: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(update(sessions).where(sessions.c.sid == sid).values(revoked=True))


# --- tokens -------------------------------------------------------------------------------


def _mint(secret: str, typ: str, user_id: int, sid: str, expires: datetime) -> str:
    now = utc_now()
    claims = {"sub": str(user_id), "sid": sid, "jti": pysecrets.token_hex(8), "typ": typ,
              "iat": int(now.timestamp()), "exp": int(expires.timestamp())}
    return jwt.encode(claims, secret, algorithm="HS256")


def _decode(token: str, secret: str, typ: str, prefix: str) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            token, secret, algorithms=["HS256"],
            options={"require": ["exp", "iat", "sub", "sid", "typ"]})
    except jwt.ExpiredSignatureError:
        raise Forbidden(f"{prefix} Signature expired.") from None
    except jwt.PyJWTError:
        raise Forbidden(f"{prefix} Invalid token.") from None
    if claims.get("typ") != typ or not str(claims["sub"]).isdigit():
        raise Forbidden(f"{prefix} Invalid token.")
    return claims


@dataclass
class TokenCache:
    """Claims of access tokens whose signature this process has already checked.

    Verifying an HS256 token with PyJWT was the largest cost of an authenticated request
    (~8 % of the API's CPU under the submit benchmark). A token's claims are a pure
    function of the token and the (fixed) secret, so a token seen before needs only its
    expiry checked again, the one claim that changes with time; everything else about the
    session is checked as before (:class:`SessionCache`, the database). Only tokens that
    verified are kept, so a forged or malformed one is checked (and refused) every time.
    """

    max_entries: int = 10_000
    _entries: dict[str, dict[str, Any]] = field(default_factory=dict)

    def decode(self, token: str, secret: str, typ: str, prefix: str) -> dict[str, Any]:
        """What :func:`_decode` returns (and raises) for this token, now."""
        claims = self._entries.get(token)
        if claims is not None and claims["typ"] == typ and claims["exp"] > time.time():
            return claims
        self._entries.pop(token, None)
        claims = _decode(token, secret, typ, prefix)  # raises for expired or forged tokens
        if len(self._entries) >= self.max_entries:
            self._entries.clear()  # bounded memory; the next requests refill it
        self._entries[token] = claims
        return claims


TOKEN_CACHE = web.AppKey("token_cache", TokenCache)


async def require_user(request: web.Request) -> User:
    """The caller of a user-facing route, from the ``access_token`` cookie.

    Raises:
        Unauthorized: no cookie.
        Forbidden: the token is expired, forged, of the wrong kind, or its session ended.
    """
    token = request.cookies.get(ACCESS_COOKIE)
    if not token:
        raise Unauthorized("No token provided")
    prefix = "Refresh access token."
    claims = request.app[TOKEN_CACHE].decode(token, request.app[SECRETS].access, "access",
                                             prefix)
    sid, user_id = claims["sid"], int(claims["sub"])
    engine = request.app[ENGINE]
    user = await request.app[SESSION_CACHE].user(
        sid, user_id, lambda: _session_user(engine, sid, user_id))
    if user is None:
        raise Forbidden(f"{prefix} Session ended.")
    return user


async def require_keycloak_user(request: web.Request) -> User:
    """Like :func:`require_user`, for routes only PLGrid (Keycloak) users may call."""
    user = await require_user(request)
    if not user.is_keycloak:
        raise Forbidden("User is not allowed to use this endpoint")
    return user


def _epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp()) * 1000


def _set_cookie(response: web.StreamResponse, api: ApiSettings, name: str, value: str,
                expires: datetime) -> None:
    response.set_cookie(name, value, expires=http_date(expires), path="/", httponly=True,
                        samesite="Lax", secure=api.cookie_secure or None)


def _access_expiry(api: ApiSettings, lifetime: int, session_end: datetime) -> datetime:
    return min(utc_now() + timedelta(seconds=lifetime), session_end)


# --- update keys (workers) ----------------------------------------------------------------


def mint_update_key(job_id: str, *, secrets: Secrets | None = None,
                    ttl_seconds: int | None = None) -> str:
    """The key a worker (runner, SLURM scripts) presents to POST /jobs and /tasks.

    Signed with its own secret and scoped to one job. Never returned to users:
    the SLURM bridge calls this when it writes a job's scripts. Without
    arguments it reads the secrets the API uses (configuration / ``state_dir``).
    """
    if secrets is None or ttl_seconds is None:
        api = load_api_settings()
        secrets = secrets or load_secrets(load_settings().state_dir, api)
        ttl_seconds = ttl_seconds or api.update_key_ttl_seconds
    now = int(time.time())
    claims = {"job_id": job_id, "typ": "update", "iat": now, "exp": now + ttl_seconds}
    return jwt.encode(claims, secrets.update, algorithm="HS256")


def check_update_key(key: object, job_id: str, secrets: Secrets) -> None:
    """Accept only a valid, unexpired update key minted for exactly this job.

    Raises:
        BadRequest: ``Invalid update key`` otherwise.
    """
    if not isinstance(key, str) or not key:
        raise BadRequest("Invalid update key")
    try:
        claims = jwt.decode(key, secrets.update, algorithms=["HS256"],
                            options={"require": ["exp", "iat", "job_id", "typ"]})
    except jwt.PyJWTError:
        raise BadRequest("Invalid update key") from None
    if claims.get("typ") != "update" or claims.get("job_id") != job_id:
        raise BadRequest("Invalid update key")


# --- login rate limit ---------------------------------------------------------------------


@dataclass
class LoginLimiter:
    """Failed logins per (user name, client address) within a sliding window (per process)."""

    max_failures: int
    window_seconds: float
    _failures: dict[tuple[str, str], deque[float]] = field(default_factory=dict)

    def _recent(self, key: tuple[str, str]) -> deque[float]:
        now = time.monotonic()
        times = self._failures.setdefault(key, deque())
        while times and times[0] < now - self.window_seconds:
            times.popleft()
        return times

    def check(self, username: str, address: str) -> None:
        if len(self._recent((username, address))) >= self.max_failures:
            raise TooManyRequests("Too many failed login attempts, try again later")

    def failed(self, username: str, address: str) -> None:
        if len(self._failures) > 100_000:
            self._failures.clear()  # bounded memory under a spray of names
        self._recent((username, address)).append(time.monotonic())

    def succeeded(self, username: str, address: str) -> None:
        self._failures.pop((username, address), None)


LOGIN_LIMITER = web.AppKey("login_limiter", LoginLimiter)

# --- Keycloak -----------------------------------------------------------------------------


class KeycloakVerifier:
    """Verifies PLGrid Keycloak access tokens (RS256) against the realm's JWKS."""

    def __init__(self, api: ApiSettings, http: aiohttp.ClientSession) -> None:
        self.api = api
        self.http = http
        self.keys: dict[str, Any] = {}
        self.min_refetch_seconds = 5.0
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    @property
    def configured(self) -> bool:
        return bool(self.api.keycloak_base_url and self.api.keycloak_realm)

    @property
    def issuer(self) -> str:
        base = (self.api.keycloak_base_url or "").rstrip("/")
        return f"{base}/auth/realms/{self.api.keycloak_realm}"

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/certs"

    async def _fetch(self) -> None:
        try:
            async with self.http.get(self.jwks_url,
                                     timeout=aiohttp.ClientTimeout(total=5)) as resp:
                resp.raise_for_status()
                data = await resp.json(content_type=None)
            keys = {}
            for jwk in data["keys"]:
                if jwk.get("kty") == "RSA" and jwk.get("kid") and jwk.get("use", "sig") == "sig":
                    keys[jwk["kid"]] = jwt.PyJWK(jwk, algorithm="RS256").key
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError,
                jwt.PyJWTError) as exc:
            log.warning("cannot fetch Keycloak JWKS from %s: %s", self.jwks_url, exc)
            raise Forbidden("Service is not available") from exc
        self.keys = keys
        self._fetched_at = time.monotonic()

    async def key_for(self, kid: str) -> Any:
        """The public key with this id, refetching the JWKS (rate-limited) if it is new."""
        if kid in self.keys:
            return self.keys[kid]
        async with self._lock:
            if kid not in self.keys and (
                    time.monotonic() - self._fetched_at >= self.min_refetch_seconds):
                await self._fetch()
        if kid not in self.keys:
            raise Forbidden("Invalid token")
        return self.keys[kid]

    async def verify(self, token: str) -> dict[str, Any]:
        """The token's claims if it is valid for this service.

        Raises:
            Forbidden: not configured / unreachable, expired, or invalid in any way.
        """
        if not self.configured:
            raise Forbidden("Service is not available")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Forbidden("Invalid token") from None
        kid = header.get("kid")
        if header.get("alg") != "RS256" or not isinstance(kid, str):
            raise Forbidden("Invalid token")
        key = await self.key_for(kid)
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=["RS256"], audience=self.api.keycloak_audience,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "iss", "aud", "preferred_username"]})
        except jwt.ExpiredSignatureError:
            raise Forbidden("Signature expired") from None
        except jwt.PyJWTError:
            raise Forbidden("Invalid token") from None
        username = claims["preferred_username"]
        if not isinstance(username, str) or not username or len(username) > 200:
            raise Forbidden("Invalid token")
        required = self.api.keycloak_required_service
        services = claims.get("plgridAccessServices") or []
        if required and (not isinstance(services, list) or required not in services):
            raise Forbidden(f"User {username} has no access to our service")
        return claims


KEYCLOAK = web.AppKey("keycloak", KeycloakVerifier)

# --- routes -------------------------------------------------------------------------------


def _credentials(body: dict[str, Any]) -> tuple[str, str]:
    missing_keys(body, ("username", "password"))
    username, password = body["username"], body["password"]
    if not isinstance(username, str) or not isinstance(password, str):
        raise BadRequest("Wrong data provided: username and password must be strings")
    if not username or len(username) > 200 or not password or len(password) > 1024:
        raise BadRequest("Wrong data provided: username or password is empty or too long")
    return username, password


@routes.put("/auth/register")
async def register(request: web.Request) -> web.Response:
    """PUT /auth/register."""
    api = request.app[API_SETTINGS]
    body = await read_object(request)
    extra = set(body) - {"username", "password"}
    if extra:
        raise BadRequest("Wrong data provided", **{k: ["Unknown field."] for k in sorted(extra)})
    username, password = _credentials(body)
    if not api.open_registration:
        raise Forbidden("Registration is closed")
    try:
        await create_user(request.app[ENGINE], username, password)
    except IntegrityError:
        raise Forbidden("User existing") from None
    return reply("User created", 201)


@routes.post("/auth/login")
async def login(request: web.Request) -> web.Response:
    """POST /auth/login."""
    api = request.app[API_SETTINGS]
    engine = request.app[ENGINE]
    limiter = request.app[LOGIN_LIMITER]
    username, password = _credentials(await read_object(request))
    address = request.remote or "?"
    limiter.check(username, address)
    async with engine.connect() as conn:
        row = (await conn.execute(select(users.c.id, users.c.password_hash).where(
            users.c.username == username, users.c.provider == "password"))).first()
    ok = await asyncio.to_thread(check_password, password, row.password_hash if row else None)
    if row is None or not ok:
        limiter.failed(username, address)
        raise Unauthorized("Invalid login or password")
    limiter.succeeded(username, address)
    secrets = request.app[SECRETS]
    sid, session_end = await _new_session(engine, int(row.id), api.refresh_ttl_seconds)
    access_exp = _access_expiry(api, api.access_ttl_seconds, session_end)
    response = reply("Successfully logged in", 202, access_exp=_epoch_ms(access_exp),
                     refresh_exp=_epoch_ms(session_end))
    _set_cookie(response, api, ACCESS_COOKIE,
                _mint(secrets.access, "access", int(row.id), sid, access_exp), access_exp)
    _set_cookie(response, api, REFRESH_COOKIE,
                _mint(secrets.refresh, "refresh", int(row.id), sid, session_end), session_end)
    return response


@routes.get("/auth/refresh")
async def refresh(request: web.Request) -> web.Response:
    """GET /auth/refresh."""
    api = request.app[API_SETTINGS]
    secrets = request.app[SECRETS]
    token = request.cookies.get(REFRESH_COOKIE)
    if not token:
        raise Unauthorized("No token provided")
    claims = _decode(token, secrets.refresh, "refresh", "Log in again.")
    engine = request.app[ENGINE]
    user = await _session_user(engine, claims["sid"], int(claims["sub"]))
    if user is None:
        raise Forbidden("Log in again. Session ended.")
    session_end = datetime.fromtimestamp(int(claims["exp"]), UTC)
    access_exp = _access_expiry(api, api.access_ttl_seconds, session_end)
    response = reply("User refreshed", access_exp=_epoch_ms(access_exp))
    _set_cookie(response, api, ACCESS_COOKIE,
                _mint(secrets.access, "access", user.id, user.sid, access_exp), access_exp)
    return response


@routes.get("/auth/status")
async def status(request: web.Request) -> web.Response:
    """GET /auth/status."""
    user = await require_user(request)
    return reply("User status", username=user.username)


async def _revoke_from_cookies(request: web.Request) -> None:
    """Revoke the session named by whichever cookie still decodes (expired ones too)."""
    secrets = request.app[SECRETS]
    for name, secret in ((ACCESS_COOKIE, secrets.access), (REFRESH_COOKIE, secrets.refresh)):
        token = request.cookies.get(name)
        if not token:
            continue
        try:
            claims = jwt.decode(token, secret, algorithms=["HS256"],
                                options={"verify_exp": False, "require": ["sid"]})
        except jwt.PyJWTError:
            continue
        if isinstance(claims.get("sid"), str):
            request.app[SESSION_CACHE].drop(claims["sid"])
            await _revoke(request.app[ENGINE], claims["sid"])


@routes.delete("/auth/logout")
async def logout(request: web.Request) -> web.Response:
    """DELETE /auth/logout."""
    await _revoke_from_cookies(request)
    response = reply("User logged out")
    response.del_cookie(ACCESS_COOKIE, path="/")
    response.del_cookie(REFRESH_COOKIE, path="/")
    return response


@routes.post("/auth/keycloak")
async def keycloak_login(request: web.Request) -> web.Response:
    """POST /auth/keycloak."""
    api = request.app[API_SETTINGS]
    engine = request.app[ENGINE]
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("No token provided")
    claims = await request.app[KEYCLOAK].verify(token.strip())
    username: str = claims["preferred_username"]
    user_id = await _user_id(engine, username, "keycloak")
    if user_id is None:
        try:
            async with engine.begin() as conn:
                result = await conn.execute(insert(users).values(
                    username=username, provider="keycloak", password_hash=None,
                    created_at=utc_now()))
                user_id = _inserted_id(result)
        except IntegrityError:
            user_id = await _user_id(engine, username, "keycloak")
    if user_id is None:  # pragma: no cover - deleted between insert and select
        raise Forbidden("User not found")
    sid, session_end = await _new_session(engine, user_id, api.keycloak_ttl_seconds)
    response = reply("Successfully logged in", 202, access_exp=_epoch_ms(session_end))
    _set_cookie(response, api, ACCESS_COOKIE,
                _mint(request.app[SECRETS].access, "access", user_id, sid, session_end),
                session_end)
    return response


@routes.delete("/auth/keycloak")
async def keycloak_logout(request: web.Request) -> web.Response:
    """DELETE /auth/keycloak."""
    await _revoke_from_cookies(request)
    response = reply("User logged out")
    response.del_cookie(ACCESS_COOKIE, path="/")
    return response


@routes.post("/user/update")
async def user_update(request: web.Request) -> web.Response:
    """POST /user/update."""
    user = await require_user(request)
    body = await read_json(request) if request.can_read_body else {}
    if not isinstance(body, dict) or not body:
        raise BadRequest("Wrong data provided")
    return reply(f"User {user.username} updated", 202)


@routes.get("/clusters")
async def clusters(request: web.Request) -> web.Response:
    """GET /clusters."""
    await require_keycloak_user(request)
    names = [{"cluster_name": c.name} for c in request.app[API_SETTINGS].clusters]
    return reply("Available clusters", clusters=names)

