"""``python -m services.api [--host H] [--port P]``: serve the REST API."""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace

from aiohttp import web

from services.api.app import create_app
from services.settings import load_api_settings, load_settings


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the server until interrupted."""
    api = load_api_settings()
    parser = argparse.ArgumentParser(prog="python -m services.api", description=__doc__)
    parser.add_argument("--host", default=api.host)
    parser.add_argument("--port", type=int, default=api.port)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    api = replace(api, host=args.host, port=args.port)
    web.run_app(create_app(load_settings(), api), host=api.host, port=api.port)


if __name__ == "__main__":
    main()
