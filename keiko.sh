#!/usr/bin/env bash
# Keiko's one entry point. Sets up a virtual environment on first use (and again whenever
# pyproject.toml changes), then:
#   ./keiko.sh serve   migrate and run the API plus one worker (embedded defaults, or the
#                      database/broker named by KEIKO_DATABASE_URL / KEIKO_BROKER_URL)
#   ./keiko.sh test    run the whole test suite (arguments go to pytest)
#   ./keiko.sh lint    ruff, mypy and the import contracts (lint-imports)
#   ./keiko.sh api | worker | migrate   one process only
#   ./keiko.sh add-user NAME             create a user (if new) and print a new API key
set -euo pipefail
cd "$(dirname "$0")"

VENV="${KEIKO_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

setup() {
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
            || { echo "Keiko needs Python 3.11 or newer ($PYTHON is older)" >&2; exit 1; }
        "$PYTHON" -m venv "$VENV"
    fi
    local stamp="$VENV/.keiko-installed"
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
        "$VENV/bin/python" -m pip install --quiet -e '.[dev]'
        touch "$stamp"
    fi
}

# The browser tests drive Debian's Chromium (Playwright's own browser download is not
# reachable everywhere); install it when missing and we may.
ensure_chromium() {
    command -v chromium >/dev/null 2>&1 && return 0
    [ -n "${KEIKO_CHROMIUM:-}" ] && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing Debian's chromium for the browser tests" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null \
            || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive \
                 apt-get install -y -q chromium >/dev/null; } \
            || echo "could not install chromium; the browser tests will say so" >&2
    else
        echo "chromium is missing: install it (apt-get install chromium) for the browser tests" >&2
    fi
}

command="${1:-serve}"
shift || true
setup
case "$command" in
    serve | api | worker | migrate | add-user)
        exec "$VENV/bin/python" -m service.cli "$command" "$@" ;;
    test)
        ensure_chromium
        exec "$VENV/bin/python" -m pytest "$@" ;;
    lint)
        "$VENV/bin/ruff" check service workers models keiko tests bench
        "$VENV/bin/ruff" format --check service workers models keiko tests bench
        "$VENV/bin/mypy" service workers models keiko
        exec "$VENV/bin/lint-imports" --no-cache ;;  # the import contracts in pyproject.toml
    *)
        echo "usage: ./keiko.sh serve|test|lint|api|worker|migrate|add-user" >&2
        exit 2 ;;
esac
