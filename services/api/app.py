"""The application factory: one cleanup context per resource, typed keys, routes, middlewares.

``create_app(settings)`` is what ``python -m services.api`` runs and what the
tests start; nothing is connected until the app starts, and every resource
that started is released, in reverse order, when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from services.api import auth, jobs, listing, live, openapi, results, stream, usage
from services.api.auth import (
    KEYCLOAK,
    LOGIN_LIMITER,
    SECRETS,
    SESSION_CACHE,
    TOKEN_CACHE,
    KeycloakVerifier,
    LoginLimiter,
    SessionCache,
    TokenCache,
    auth_metadata,
    load_secrets,
)
from services.api.common import API_SETTINGS, ARTIFACTS, ENGINE, PRODUCER, SETTINGS
from services.api.cors import cors_middleware
from services.api.errors import error_middleware
from services.api.livefeed import LiveFeed
from services.api.readwait import WAITER, JobWaiter
from services.api.stream import FEED, STREAM_SETTINGS
from services.artifacts.store import ArtifactStore
from services.contract.errors import PublishFailed
from services.contract.kafka_io import EventProducer
from services.ops import http as ops_http
from services.ops.health import Health, database_check, kafka_check
from services.ops.http import HEALTH, metrics_middleware
from services.projector.readmodel import create_schema, make_engine
from services.projector.usage_model import usage_metadata
from services.settings import (
    ApiSettings,
    Settings,
    StreamSettings,
    load_api_settings,
    load_ops_settings,
    load_stream_settings,
)

log = logging.getLogger(__name__)


async def _create_schemas(app: web.Application) -> None:
    """Read-model and auth tables (create_schema retries the start-up race)."""
    await create_schema(app[ENGINE])
    await create_schema(app[ENGINE], auth_metadata)
    await create_schema(app[ENGINE], usage_metadata)


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    """The read-model database (schemas created, engine disposed at the end)."""
    app[ENGINE] = make_engine(app[SETTINGS].database.url)
    try:
        await _create_schemas(app)
        yield
    finally:
        await app[ENGINE].dispose()


async def artifacts_ctx(app: web.Application) -> AsyncIterator[None]:
    """The content-addressed artifact store."""
    root = app[SETTINGS].artifacts.root
    await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
    app[ARTIFACTS] = store = ArtifactStore(root)
    yield
    await store.aclose()  # a clean stop leaves no journal segment to recover


async def _connect(producer: EventProducer) -> None:
    """Connect the producer, retrying with back-off until Kafka answers."""
    delay = 0.5
    while not producer.started:
        await asyncio.sleep(delay)
        delay = min(delay * 2, 10.0)
        try:
            await producer.start()
            log.info("connected to Kafka at %s", producer.settings.bootstrap_servers)
        except PublishFailed as exc:
            log.warning("Kafka still unreachable, retrying in %.1f s: %s", delay, exc)


async def producer_ctx(app: web.Application) -> AsyncIterator[None]:
    """The Kafka producer of job events, connected in the background.

    The API serves while Kafka is unreachable (writes answer 503, ``/readyz`` says not
    ready) and connects as soon as it can, instead of refusing to start.
    """
    producer = EventProducer(app[SETTINGS].kafka,
                             give_up_seconds=app[API_SETTINGS].publish_timeout_seconds)
    app[PRODUCER] = producer
    try:
        await producer.start()  # the usual case: connected before the first request
    except PublishFailed as exc:
        log.warning("Kafka unreachable at start-up, serving without it: %s", exc)
    connecting = asyncio.create_task(_connect(producer), name="kafka-connect")
    try:
        yield
    finally:
        connecting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await connecting
        await producer.stop()


async def health_ctx(app: web.Application) -> AsyncIterator[None]:
    """Readiness checks of Kafka and the database, in the background."""
    ops = load_ops_settings(None)  # the routes are on the API's own port
    producer = app[PRODUCER]
    health = Health([kafka_check(app[SETTINGS].kafka), database_check(app[ENGINE])],
                    interval=ops.check_interval, timeout=ops.check_timeout,
                    started=lambda: producer.started)
    app[HEALTH] = health
    health.start()
    try:
        yield
    finally:
        await health.stop()


async def http_client_ctx(app: web.Application) -> AsyncIterator[None]:
    """The outgoing HTTP client (Keycloak JWKS)."""
    async with aiohttp.ClientSession() as session:
        app[KEYCLOAK] = KeycloakVerifier(app[API_SETTINGS], session)
        yield


async def waiter_ctx(app: web.Application) -> AsyncIterator[None]:
    """The read-your-writes poller."""
    waiter = JobWaiter(app[ENGINE], app[API_SETTINGS].read_wait_seconds)
    waiter.start()
    app[WAITER] = waiter
    try:
        yield
    finally:
        await waiter.stop()


async def live_feed_ctx(app: web.Application) -> AsyncIterator[None]:
    """The shared tail of the jobs topic that live streams subscribe to."""
    feed = LiveFeed(app[SETTINGS].kafka, app[ENGINE], app[STREAM_SETTINGS])
    await feed.start()
    app[FEED] = feed
    try:
        yield
    finally:
        await feed.stop()


async def _end_streams(app: web.Application) -> None:
    """Open streams would hold a graceful shutdown up for its whole timeout."""
    if FEED in app:
        app[FEED].end_all()


def create_app(settings: Settings, api: ApiSettings | None = None,
               streams: StreamSettings | None = None) -> web.Application:
    """The REST API for these settings (API and stream settings not given: from the env)."""
    api = api or load_api_settings()
    app = web.Application(middlewares=[metrics_middleware, cors_middleware, error_middleware],
                          client_max_size=api.max_body_bytes)
    app[SETTINGS] = settings
    app[API_SETTINGS] = api
    app[STREAM_SETTINGS] = streams or load_stream_settings()
    app[SECRETS] = load_secrets(settings.state_dir, api)
    app[LOGIN_LIMITER] = LoginLimiter(api.login_max_failures, api.login_window_seconds)
    app[SESSION_CACHE] = SessionCache(api.session_cache_seconds)
    app[TOKEN_CACHE] = TokenCache()
    app.on_shutdown.append(_end_streams)
    app.cleanup_ctx.extend([database_ctx, artifacts_ctx, producer_ctx, http_client_ctx,
                            waiter_ctx, health_ctx, live_feed_ctx])
    for module in (openapi, auth, jobs, results, listing, usage, ops_http, stream, live):
        app.add_routes(module.routes)
    return app
