"""One real API (real Kafka, real database, real projector) shared per test module."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jsonschema import Draft202012Validator

from devstack import postgres
from services.api.app import create_app
from services.api.openapi import spec
from services.contract.envelope import utc_now
from services.projector.projector import Projector
from services.projector.readmodel import make_engine
from services.settings import (
    ApiSettings,
    ArtifactSettings,
    ClusterConfig,
    DatabaseSettings,
    KafkaSettings,
    ProjectorSettings,
    Settings,
    StreamSettings,
)
from tests.conftest import fresh_topics

REALM = "test"
AUDIENCE = "yaptide"


@dataclass
class Realm:
    """A local stand-in for Keycloak's JWKS endpoint, with keys we sign with."""

    server: TestServer
    keys: dict[str, rsa.RSAPrivateKey] = field(default_factory=dict)
    published: set[str] = field(default_factory=set)

    @property
    def base_url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    def add_key(self, kid: str, publish: bool = True) -> None:
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if publish:
            self.published.add(kid)

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid in sorted(self.published):
            jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.keys[kid].public_key(), as_dict=True)
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": keys}

    def token(self, username: str, *, kid: str = "k1", audience: str = AUDIENCE,
              lifetime: int = 300, services: list[str] | None = None,
              issuer: str | None = None) -> str:
        now = int(utc_now().timestamp())
        claims = {"iss": issuer or f"{self.base_url}/auth/realms/{REALM}", "aud": audience,
                  "iat": now - 10, "exp": now + lifetime, "preferred_username": username,
                  "plgridAccessServices": ["PLG_YAPTIDE_ACCESS"] if services is None
                  else services}
        pem = self.keys[kid].private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption())
        return jwt.encode(claims, pem, algorithm="RS256", headers={"kid": kid})


@pytest.fixture(scope="module")
async def realm() -> AsyncIterator[Realm]:
    app = web.Application()
    holder: dict[str, Realm] = {}

    async def certs(request: web.Request) -> web.Response:
        return web.json_response(holder["realm"].jwks())

    app.router.add_get(f"/auth/realms/{REALM}/protocol/openid-connect/certs", certs)
    server = TestServer(app)
    await server.start_server()
    holder["realm"] = Realm(server)
    holder["realm"].add_key("k1")
    yield holder["realm"]
    await server.close()


@dataclass
class Stack:
    """A running API with its projector."""

    settings: Settings
    api: ApiSettings
    app: web.Application
    server: TestServer
    sessions: list[aiohttp.ClientSession] = field(default_factory=list)

    def client(self) -> aiohttp.ClientSession:
        session = aiohttp.ClientSession(base_url=str(self.server.make_url("/")),
                                        cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.sessions.append(session)
        return session

    async def user(self, name: str | None = None) -> aiohttp.ClientSession:
        """A logged-in password user's session."""
        name = name or f"user-{uuid.uuid4().hex[:8]}"
        session = self.client()
        creds = {"username": name, "password": "pw-" + name}
        async with session.put("/auth/register", json=creds) as r:
            assert r.status == 201, await r.text()
        async with session.post("/auth/login", json=creds) as r:
            assert r.status == 202, await r.text()
        return session

    async def keycloak_user(self, realm: Realm, name: str | None = None) -> aiohttp.ClientSession:
        name = name or f"plg{uuid.uuid4().hex[:8]}"
        session = self.client()
        headers = {"Authorization": f"Bearer {realm.token(name)}"}
        async with session.post("/auth/keycloak", json={"username": name}, headers=headers) as r:
            assert r.status == 202, await r.text()
        return session


def make_settings(kafka: KafkaSettings, db_url: str, state: Path) -> Settings:
    return Settings(kafka=kafka, database=DatabaseSettings(db_url),
                    artifacts=ArtifactSettings(state / "artifacts"),
                    projector=ProjectorSettings(max_batch=500, group_id="projector"),
                    state_dir=state)


@contextlib.asynccontextmanager
async def running_stack(settings: Settings, api: ApiSettings, with_projector: bool = True,
                        streams: StreamSettings | None = None) -> AsyncIterator[Stack]:
    app = create_app(settings, api, streams)
    server = TestServer(app)
    await server.start_server()
    stack = Stack(settings, api, app, server)
    engine = make_engine(settings.database.url)
    projector = Projector(settings.kafka, engine, group_id=f"p-{uuid.uuid4().hex[:6]}")
    task = asyncio.create_task(projector.run()) if with_projector else None
    try:
        yield stack
    finally:
        for session in stack.sessions:
            await session.close()
        await projector.shutdown()
        if task is not None:
            await task
        await engine.dispose()
        await server.close()


def api_settings(realm: Realm, **overrides: Any) -> ApiSettings:
    values: dict[str, Any] = {
        "clusters": (ClusterConfig("ares"), ClusterConfig("athena")),
        "keycloak_base_url": realm.base_url, "keycloak_realm": REALM,
        "keycloak_audience": AUDIENCE, "max_body_bytes": 256 * 1024,
        "read_wait_seconds": 3.0,
        # No SLURM bridge runs here: batch submissions answer at once, waiting for it.
        "batch_submit_wait_seconds": 0.0,
    }
    values.update(overrides)
    return ApiSettings(**values)


@pytest.fixture(scope="module")
async def module_kafka(kafka_bootstrap: str) -> KafkaSettings:
    return await fresh_topics(kafka_bootstrap, tasks_partitions=2, client_id="test-api")


@pytest.fixture(scope="module")
def module_db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    kind = getattr(request, "param", "sqlite")
    if kind == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'readmodel.sqlite3'}"
    server: postgres.PostgresHandle = request.getfixturevalue("postgres_server")
    return postgres.create_database(server, f"t_{uuid.uuid4().hex[:16]}")


@pytest.fixture(scope="module")
async def stack(module_kafka: KafkaSettings, module_db_url: str, realm: Realm,
                tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    settings = make_settings(module_kafka, module_db_url, tmp_path_factory.mktemp("state"))
    async with running_stack(settings, api_settings(realm)) as running:
        yield running


# --- response checking against the OpenAPI document ---------------------------------------


def response_schema(path: str, method: str, status: int) -> dict[str, Any] | None:
    document = spec()
    responses = document["paths"][path][method.lower()]["responses"]
    response = responses[str(status)]
    if "$ref" in response:
        response = document["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    content = response.get("content", {}).get("application/json")
    return None if content is None else dict(content["schema"])


async def call(session: aiohttp.ClientSession, method: str, path: str,
               **kwargs: Any) -> tuple[int, Any]:
    """Make a request; check its status is documented in openapi.yaml and its body valid."""
    async with session.request(method, path, **kwargs) as resp:
        body = await resp.json(content_type=None)
        status = resp.status
    route = path.split("?")[0]
    schema = response_schema(route, method, status)
    assert schema is not None, f"{method} {route} -> {status} has no JSON schema"
    wrapped = {"$schema": "https://json-schema.org/draft/2020-12/schema", "allOf": [schema],
               "components": spec()["components"]}
    errors = list(Draft202012Validator(wrapped).iter_errors(body))
    assert not errors, f"{method} {route} -> {status}: {errors[0].message}; body={body}"
    return status, body
