#!/usr/bin/env bash
# Installs what this project needs on a fresh Debian machine, idempotently:
# Java 17 + Maven (to assemble and run Kafka), Python venv with the pinned
# dependencies (pyproject.toml, and constraints.txt for theirs), npm and the
# live page's pinned JavaScript libraries (web/).
# PostgreSQL is installed by devstack/postgres.py when a test leg needs it,
# Chromium by devstack/chromium.py for the browser test. Safe to run any number
# of times; fast when nothing is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "bootstrap: installing ${need_apt[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

stamp=.venv/.installed-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "bootstrap: creating .venv and installing pinned dependencies" >&2
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip 'setuptools>=68'
  # constraints.txt pins the dependencies' own dependencies too (see its header).
  .venv/bin/python -m pip install -q -c constraints.txt -e '.[dev]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi

# The live page's JavaScript libraries (Plotly), pinned in web/package-lock.json.
web_stamp=web/node_modules/.installed-$(sha256sum web/package-lock.json | cut -c1-16)
if [ ! -f "$web_stamp" ]; then
  echo "bootstrap: installing the live page's JavaScript libraries (npm ci in web/)" >&2
  (cd web && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
  touch "$web_stamp"
fi
