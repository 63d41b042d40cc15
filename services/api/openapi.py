"""The liveness route, the OpenAPI document and a small human-readable index of it."""

from __future__ import annotations

import html
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from services.api.errors import reply

routes = web.RouteTableDef()

SPEC_PATH = Path(__file__).resolve().parents[2] / "schemas" / "openapi.yaml"


@cache
def spec_text() -> str:
    """The OpenAPI document as stored."""
    return SPEC_PATH.read_text()


@cache
def spec() -> dict[str, Any]:
    """The parsed OpenAPI document."""
    loaded: dict[str, Any] = yaml.safe_load(spec_text())
    return loaded


@routes.get("/")
async def hello(request: web.Request) -> web.Response:
    """GET /."""
    return reply("Hello World!")


@routes.get("/openapi.yaml")
async def openapi_yaml(request: web.Request) -> web.Response:
    """GET /openapi.yaml."""
    return web.Response(text=spec_text(), content_type="application/yaml")


@routes.get("/docs")
async def docs(request: web.Request) -> web.Response:
    """GET /docs."""
    document = spec()
    rows = []
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if method in ("get", "post", "put", "delete"):
                rows.append(f"<tr><td><code>{method.upper()}</code></td>"
                            f"<td><code>{html.escape(path)}</code></td>"
                            f"<td>{html.escape(operation.get('summary', ''))}</td></tr>")
    title = html.escape(document.get("info", {}).get("title", "API"))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
            f"<body><h1>{title}</h1><p>Full description: <a href='/openapi.yaml'>"
            f"openapi.yaml</a> (OpenAPI 3.1).</p><table>{''.join(rows)}</table></body></html>")
    return web.Response(text=page, content_type="text/html")
