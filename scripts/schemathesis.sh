#!/usr/bin/env bash
# Checks /openapi.json against a live server: schemathesis (PyPI, pinned) with every check,
# over every operation, in every phase (examples, coverage, fuzzing, stateful through the
# document's links). Any finding fails the run.
#
#   scripts/schemathesis.sh              build, start gateway-sim and `surge serve`, run, stop
#   SURGE_SCHEMATHESIS_EXAMPLES=50 ...   more cases per operation (default 25)
#   SURGE_SCHEMATHESIS_ARGS="--phases stateful --report har" ...   extra arguments to `schemathesis run`
#
# schemathesis lives in a venv under ~/.cache/surge (reused while its version matches); a
# machine without python3's venv module gets it from Debian, as scripts/services.sh gets its
# packages. The server runs on loopback ports of its own with a temporary data directory,
# the admin token and a merchant's API key are made up here, and the run's report lands in
# $SURGE_SCHEMATHESIS_OUT (default target/schemathesis).
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
VENV=${SURGE_SCHEMATHESIS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/surge/venv}
EXAMPLES=${SURGE_SCHEMATHESIS_EXAMPLES:-25}
OUT=${SURGE_SCHEMATHESIS_OUT:-target/schemathesis}
SEED=${SURGE_SCHEMATHESIS_SEED:-1}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_venv() {
    if ! command -v python3 >/dev/null || ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
        echo "schemathesis: installing python3-venv from Debian" >&2
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-venv
    fi
    if [ "$("$VENV/bin/schemathesis" --version 2>/dev/null)" != "schemathesis, version $SCHEMATHESIS_VERSION" ]; then
        echo "schemathesis: installing schemathesis $SCHEMATHESIS_VERSION into $VENV" >&2
        rm -rf "$VENV"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
    fi
}

install_venv
cargo build --locked -p surge-api --bin surge
SURGE=${CARGO_TARGET_DIR:-target}/debug/surge
PY="$VENV/bin/python"

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
SIM_PORT=$(free_port)
PORT=$(free_port)
BASE=http://127.0.0.1:$PORT
ADMIN=$("$PY" -c 'import secrets; print(secrets.token_hex(16))')
SECRET=$("$PY" -c 'import secrets; print(secrets.token_hex(16))')

# A gateway that answers at once and always accepts, so card payments are 202, not 503.
"$SURGE" gateway-sim --listen "127.0.0.1:$SIM_PORT" --success-rate 1 --approval-rate 0.5 --latency-ms 0 \
    --settle-ms 10..50 --callback-secret "$SECRET" --seed 1 >"$WORK/gateway-sim.log" 2>&1 &
PIDS+=($!)
"$SURGE" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" --admin-token "$ADMIN" --shards 2 \
    --gateway-url "http://127.0.0.1:$SIM_PORT" --gateway-secret "$SECRET" >"$WORK/surge.log" 2>&1 &
PIDS+=($!)

# Ready, then a merchant: its API key is the run's merchant credential.
KEY=$("$PY" - "$BASE" "$ADMIN" <<'EOF'
import json, sys, time, urllib.request
base, admin = sys.argv[1], sys.argv[2]
for _ in range(300):
    try:
        urllib.request.urlopen(base + "/readyz", timeout=1)
        break
    except Exception:
        time.sleep(0.1)
else:
    sys.exit("schemathesis: surge serve did not become ready")
req = urllib.request.Request(base + "/v1/merchants", method="POST",
    data=json.dumps({"id": "schemathesis", "name": "Schemathesis", "currency": "KRW"}).encode(),
    headers={"authorization": "Bearer " + admin, "content-type": "application/json"})
print(json.load(urllib.request.urlopen(req))["api_key"])
EOF
)

# Each operation gets the credential its security names: a merchant's key, or the admin token
# (as Bearer, or as the Basic password of GET /admin).
cat >"$WORK/schemathesis.toml" <<EOF
[auth.openapi.merchant]
bearer = "$KEY"

[auth.openapi.admin]
bearer = "$ADMIN"

[auth.openapi.admin_basic]
username = "admin"
password = "$ADMIN"

# A request the schema allows can still be refused by the state it meets: an id nobody
# made (404), a resource in another status or out of stock (409), too few points (402), a
# waiting room's token missing (403), an Idempotency-Key the run used before with another
# request (422), or by its size: a body over 64 KiB (413; JSON Schema counts items, not
# bytes). Each is documented on its operation. A 400 is not among them: a request the
# schema allows must be taken.
[checks.positive_data_acceptance]
expected-statuses = ["2xx", 401, 402, 403, 404, 409, 413, 422]

# Refusals by the state a request meets that are 400 invalid_request, each stated on its
# operation's 400: a restock past the largest stock, an order whose total would pass the
# largest amount or whose hold is another customer's, a points balance past the largest
# amount, a capture or refund of more than the payment has left, a worker's report with
# another transaction key.
[[operations]]
include-operation-id-regex = "^(restock|create_order|credit_points|capture_payment|refund_payment|report)$"
[operations.checks.positive_data_acceptance]
expected-statuses = ["2xx", 400, 401, 402, 403, 404, 409, 413, 422]

# Stateful scenarios follow the document's links (an item's sku into a hold and an order, an
# order's id into its payment, ...); longer scenarios reach the end of those chains.
[phases.stateful]
max-steps = ${SURGE_SCHEMATHESIS_STEPS:-40}

# Scenarios send valid requests, so a chain reaches its end; the other phases send invalid
# ones too.
[phases.stateful.generation]
mode = "positive"

# schemathesis' defaults, and 413 (a body over 64 KiB is refused before it is read).
[checks.negative_data_rejection]
expected-statuses = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429, "5xx"]
EOF

mkdir -p "$OUT"
echo "schemathesis: $EXAMPLES examples per operation against $BASE (seed $SEED)" >&2
status=0
SCHEMATHESIS_HOOKS=$PWD/scripts/schemathesis_hooks.py "$VENV/bin/schemathesis" --config-file "$WORK/schemathesis.toml" run "$BASE/openapi.json" \
    --checks all --max-examples "$EXAMPLES" --seed "$SEED" --workers 2 --no-color \
    --report junit --report-dir "$OUT" ${SURGE_SCHEMATHESIS_ARGS:-} || status=$?
if [ "$status" -ne 0 ]; then
    echo "schemathesis: FAILED (exit $status); the server's log:" >&2
    tail -n 50 "$WORK/surge.log" >&2
    exit "$status"
fi
echo "schemathesis: no findings" >&2
