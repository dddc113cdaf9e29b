#!/usr/bin/env bash
# Installs the official Python MCP client (PyPI `mcp`, pinned) into a venv under ~/.cache/surge
# (reused while its version matches) and prints the venv's python. api/tests/mcp_e2e.rs runs
# it; like scripts/schemathesis.sh, a machine without python3's venv module gets it from
# Debian. Fails (non-zero, with the reason on stderr) when it cannot.
set -euo pipefail

MCP_VERSION=2.3.0
VENV=${SURGE_MCP_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/surge/mcp-venv}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if ! command -v python3 >/dev/null || ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    echo "mcp: installing python3-venv from Debian" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-venv >&2
fi
if [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("mcp"))' 2>/dev/null)" != "$MCP_VERSION" ]; then
    echo "mcp: installing mcp $MCP_VERSION into $VENV" >&2
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV" >&2
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "mcp==$MCP_VERSION" >&2
fi
echo "$VENV/bin/python"
