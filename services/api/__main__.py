"""``python -m services.api [--host H] [--port P] [--reuse-port]``: serve the REST API.

``--reuse-port`` lets several API processes listen on one port (``SO_REUSEPORT``; on
Linux the kernel spreads incoming connections over them). It is off by default, so that
a second API started by mistake fails to bind instead of silently sharing the port;
``devstack.stack up --api-workers N`` turns it on for its own workers.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace

from aiohttp import web

from services.api.app import create_app
from services.ops.gctune import tune_garbage_collector
from services.ops.http import JobAccessLogger
from services.ops.logs import setup_logging
from services.settings import load_api_settings, load_settings


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the server until interrupted."""
    api = load_api_settings()
    parser = argparse.ArgumentParser(prog="python -m services.api", description=__doc__)
    parser.add_argument("--host", default=api.host)
    parser.add_argument("--port", type=int, default=api.port)
    parser.add_argument("--reuse-port", action="store_true",
                        help="share the port with other API processes (SO_REUSEPORT)")
    args = parser.parse_args(argv)
    setup_logging("api")
    tune_garbage_collector()
    api = replace(api, host=args.host, port=args.port)
    web.run_app(create_app(load_settings(), api), host=api.host, port=api.port,
                reuse_port=args.reuse_port or None, access_log_class=JobAccessLogger,
                print=logging.getLogger(__name__).info)


if __name__ == "__main__":
    main()
