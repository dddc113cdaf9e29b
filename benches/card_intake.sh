#!/usr/bin/env bash
# Card-order intake against points-order intake, in one run on this machine:
#   1. starts `surge gateway-sim` with its defaults (100..500 ms per call, settle 1..5 s,
#      success rate 0.6, approval rate 0.7) and `surge serve` with its gateway worker in
#      process, pointed at the sim, over a fresh data directory;
#   2. drives `POST /v1/orders` paid with points (`surge load --scenario orders`), then paid
#      by card (`--scenario card-flow`: 202 intake, settled later through the sim), both with
#      the same loop, connections and duration;
#   3. prints orders/s, p50 and p99 of each and the ratio card / points (target: >= 0.90),
#      and whether the gateway worker kept up: after the card load, the server's
#      `surge_gateway_payments_pending` (from /metrics, sampled every 0.5 s) must drain to 0
#      within its settle deadline, with at most 5% of the payments given up
#      (`surge_gateway_gave_up_total`) instead of settled.
# Closed loop (the default) because orders/s then measures what intake costs: in open loop at
# one rate both kinds answer that rate and the ratio is 1 by construction. The card run's
# figure includes the gateway worker's own work on the server CPU while the load runs, as a
# server taking card orders does it. `MODE=open RATE=R` runs both at R orders/s instead: for
# the latencies at a given rate and whether the worker keeps up with it. Each run prints its
# steal time (from /proc/stat).
# The card-flow run checks its invariants (no payment left pending, paid share within the
# bounds the sim's rates imply, stock, ledger, nothing charged twice) and its verdict is
# printed; a failed check does not stop the script. The card run waits for its payments up to
# the settle deadline plus 20 s, so a run takes one to four minutes.
# Knobs (environment): MODE (closed), RATE (1000; open loop), DURATION (10s), CONNECTIONS (64),
# SERVER_CPUS (0), LOAD_CPUS (1), SIM_CPUS (LOAD_CPUS), SETTLE_DEADLINE_MS (120000, passed to
# `surge serve`), SPORT (18280), GPORT (19380), OUT (load-results/card-intake),
# CARGO_TARGET_DIR (target), BIN (prebuilt binaries instead of $CARGO_TARGET_DIR/release; skips
# the build). Needs jq and curl.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

MODE=${MODE:-closed}
RATE=${RATE:-1000}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
SERVER_CPUS=${SERVER_CPUS:-0}
LOAD_CPUS=${LOAD_CPUS:-1}
SIM_CPUS=${SIM_CPUS:-$LOAD_CPUS}
SETTLE_DEADLINE_MS=${SETTLE_DEADLINE_MS:-120000}
OUT=${OUT:-load-results/card-intake}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN=${BIN:-}
TOKEN="bench-admin-$$"
SPORT=${SPORT:-18280}
GPORT=${GPORT:-19380}
SECRET=sim-secret

case $MODE in
closed) LOOP=(--mode closed) LOOP_TEXT="closed loop" ;;
open) LOOP=(--mode open --rate "$RATE") LOOP_TEXT="open loop at $RATE/s" ;;
*) echo "MODE is closed or open" >&2; exit 2 ;;
esac

need_tools jq curl

release_bin -p surge-api

scratch
mkdir -p "$OUT"

SIM="http://127.0.0.1:$GPORT"
SURGE="http://127.0.0.1:$SPORT"
(pin "$SIM_CPUS" "$BIN/surge" gateway-sim --listen "127.0.0.1:$GPORT" --callback-secret "$SECRET" \
    2>"$OUT/gateway-sim.log" >/dev/null) &
PIDS+=($!)
(pin "$SERVER_CPUS" "$BIN/surge" serve --listen "127.0.0.1:$SPORT" --data-dir "$DATA" --admin-token "$TOKEN" \
    --gateway-url "$SIM" --gateway-secret "$SECRET" --gateway-settle-deadline-ms "$SETTLE_DEADLINE_MS" \
    2>"$OUT/surge.log" >/dev/null) &
PIDS+=($!)

wait_for "$SIM/sim/config"
wait_for "$SURGE/readyz"
echo "== gateway-sim: $(curl -sf "$SIM/sim/config")"

# One line of the server's /metrics every 0.5 s while a run lasts: Unix time, card orders
# answered 202, payments pending at the gateway worker, payments it gave up on.
sample_metrics() {
    while :; do
        curl -sf "$SURGE/metrics" | awk -v t="$(date +%s.%N)" '
            /^surge_http_requests_total\{route="\/v1\/orders",method="POST",status="202"\}/ { c = $NF }
            /^surge_gateway_payments_pending / { p = $NF }
            /^surge_gateway_gave_up_total / { g = $NF }
            END { print t, c + 0, p + 0, g + 0 }' || true
        sleep 0.5
    done
}

load() { # name scenario [args...]
    local name=$1 scenario=$2 s0 l0
    shift 2
    s0=$(steal_sample "$SERVER_CPUS")
    l0=$(steal_sample "$LOAD_CPUS")
    (pin "$LOAD_CPUS" "$BIN/surge" load --target "$SURGE" --admin-token "$TOKEN" --scenario "$scenario" \
        "${LOOP[@]}" --duration "$DURATION" --connections "$CONNECTIONS" --quiet \
        --json "$OUT/$name.json" --html "$OUT/$name.html" "$@" >"$OUT/$name.txt") || true
    printf '  %-7s steal: server CPUs %5s %%, load CPUs %5s %%\n' "$name" \
        "$(steal_percent "$s0" "$(steal_sample "$SERVER_CPUS")")" \
        "$(steal_percent "$l0" "$(steal_sample "$LOAD_CPUS")")" | tee -a "$OUT/steal.txt"
}
: >"$OUT/steal.txt"

echo "== points: POST /v1/orders paid with points, $LOOP_TEXT, $CONNECTIONS connections, $DURATION"
load points orders

echo "== card: POST /v1/orders paid by card (202), $LOOP_TEXT, $CONNECTIONS connections, $DURATION"
# The card run waits for its payments up to the settle deadline plus a margin before checking.
SETTLE_WAIT_S=$((SETTLE_DEADLINE_MS / 1000 + 20))
(pin "$LOAD_CPUS" bash -c "$(declare -f sample_metrics); SURGE=$SURGE sample_metrics" >"$OUT/card-metrics.txt") &
SAMPLER=$!
PIDS+=($SAMPLER)
load card card-flow --gateway-sim-url "$SIM" --settle-wait "${SETTLE_WAIT_S}s"
sleep 1
kill "$SAMPLER" 2>/dev/null || true

echo "== results"
row() { # name
    jq -r --arg n "$1" '"  \($n | . + "      " | .[0:7]) \(.ops_per_s | floor) orders/s  p50 \(.latency.p50_ms * 100 | round / 100) ms  p99 \(.latency.p99_ms * 100 | round / 100) ms  checks \(if .passed then "PASS" else "FAIL: " + ([.checks[] | select(.pass | not) | .name] | join(", ")) end)"' "$OUT/$1.json"
}
row points
row card
POINTS=$(jq -r .ops_per_s "$OUT/points.json")
CARD=$(jq -r .ops_per_s "$OUT/card.json")
jq -rn --argjson c "$CARD" --argjson p "$POINTS" \
    '"  card / points  \($c / $p * 1000 | round / 1000) (target >= 0.90: \(if $c / $p >= 0.9 then "met" else "not met" end))"'

# The load ended at the last sample where the 202 count grew; the worker drained when
# payments pending first read 0 after that.
awk -v deadline="$((SETTLE_DEADLINE_MS / 1000))" -v cards="$(jq -r .ops "$OUT/card.json")" '
    NR == 1 { g0 = $4 }
    { t[NR] = $1; c[NR] = $2; p[NR] = $3; g = $4; if ($3 > peak) peak = $3 }
    END {
        end = 1
        for (i = 2; i <= NR; i++) if (c[i] > c[i - 1]) end = i
        drained = 0
        for (i = end; i <= NR; i++) if (p[i] == 0) { drained = i; break }
        gave = g - g0
        printf "  worker   pending payments peaked at %d", peak
        if (drained) printf "; drained to 0 %.1f s after the load (settle deadline %d s)\n", t[drained] - t[end], deadline
        else printf "; %d still pending %.1f s after the load (settle deadline %d s)\n", p[NR], t[NR] - t[end], deadline
        printf "           gave up on %d of %d card payments (%.1f%%)\n", gave, cards, (cards > 0 ? 100 * gave / cards : 0)
        kept = drained && t[drained] - t[end] <= deadline && gave <= 0.05 * cards
        printf "  kept up  %s (drained within the settle deadline, at most 5%% given up)\n", (kept ? "yes" : "no")
    }' "$OUT/card-metrics.txt" | tee "$OUT/worker.txt"
curl -sf "$SURGE/metrics" | awk '/^surge_gateway_calls_total\{.*op="authorize"/ {
        match($0, /outcome="[a-z]*"/); o = o " " substr($0, RSTART + 9, RLENGTH - 10) " " $NF }
        END { print "  calls    authorize:" o }' | tee -a "$OUT/worker.txt"
echo "  sim      $(curl -sf "$SIM/sim/stats" | jq -c '{payment_requests, failed_requests, transactions, approved, declined, cancelled, charged_twice}')"
echo "  files    $OUT/"
