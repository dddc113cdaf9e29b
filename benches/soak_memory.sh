#!/usr/bin/env bash
# Memory soak: does resident memory (and the snapshot) flatten when settled history ages
# out? Starts `surge serve` with a retention of 60 s (`--retain-settled 60s`, and an
# idempotency window of 60 s, which the retention may not be shorter than), drives it with
# `surge load --scenario orders` in open loop at a constant rate, and samples every
# INTERVAL seconds:
#   - the server's resident memory (VmRSS from /proc/PID/status),
#   - the size of the newest snapshot in the data directory.
# Prints the curve as it goes, writes it to OUT/soak.csv with the load generator's HTML
# report, and at the end judges the plateau: over the second half of the load (not the
# generator's closing checks), RSS and snapshot size must stay within 10% of their mean
# (the issue's criterion).
#
# Usage: benches/soak_memory.sh [--minutes N]   (default 20; 5 is a useful short try)
# Knobs (environment): RATE (1000 orders/s), INTERVAL (10 s), CONNECTIONS (64),
# SNAPSHOT_EVERY (20000 records), SERVER_CPUS (0), LOAD_CPUS (1), OUT
# (load-results/soak-memory), CARGO_TARGET_DIR (target), BIN (prebuilt binaries instead of
# $CARGO_TARGET_DIR/release; skips the build), PORT (18180).
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

MINUTES=20
while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) MINUTES=$2; shift 2 ;;
        *) echo "usage: $0 [--minutes N]" >&2; exit 2 ;;
    esac
done
RATE=${RATE:-1000}
INTERVAL=${INTERVAL:-10}
CONNECTIONS=${CONNECTIONS:-64}
SNAPSHOT_EVERY=${SNAPSHOT_EVERY:-20000}
SERVER_CPUS=${SERVER_CPUS:-0}
LOAD_CPUS=${LOAD_CPUS:-1}
OUT=${OUT:-load-results/soak-memory}
PORT=${PORT:-18180}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN=${BIN:-}
TOKEN="soak-admin-$$"

need_tools curl

release_bin -p surge-api -p surge-load

DATA=$(mktemp -d)
mkdir -p "$OUT"
SERVER=""
LOAD=""
cleanup() {
    [ -n "$LOAD" ] && kill "$LOAD" 2>/dev/null || true
    [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$DATA"
}
trap cleanup EXIT

(pin "$SERVER_CPUS" "$BIN/surge" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA" \
    --admin-token "$TOKEN" --retain-settled 60s --idempotency-window 60s \
    --snapshot-every "$SNAPSHOT_EVERY") >"$OUT/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break
    sleep 0.1
done
curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null || { echo "server did not start" >&2; cat "$OUT/server.log" >&2; exit 1; }

DURATION_S=$((MINUTES * 60))
echo "== soak: ${MINUTES} min of the orders scenario at ${RATE}/s, retention 60 s (server pid $SERVER)"
(pin "$LOAD_CPUS" "$BIN/surge-load" --target "http://127.0.0.1:$PORT" --admin-token "$TOKEN" \
    --scenario orders --mode open --rate "$RATE" --duration "${DURATION_S}s" \
    --connections "$CONNECTIONS" --out-dir "$OUT" --quiet) >"$OUT/load.log" 2>&1 &
LOAD=$!

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$SERVER/status" 2>/dev/null || echo 0; }
snapshot_bytes() {
    local newest
    newest=$(ls -1 "$DATA/wal"/snap-*.snap 2>/dev/null | sort | tail -n 1)
    if [ -n "$newest" ]; then stat -c %s "$newest"; else echo 0; fi
}

CSV="$OUT/soak.csv"
echo "elapsed_s,rss_kb,snapshot_bytes" >"$CSV"
printf '%8s %10s %14s\n' "elapsed" "rss_MiB" "snapshot_KiB"
START=$(date +%s)
while kill -0 "$LOAD" 2>/dev/null; do
    sleep "$INTERVAL"
    now=$(( $(date +%s) - START ))
    rss=$(rss_kb)
    snap=$(snapshot_bytes)
    echo "$now,$rss,$snap" >>"$CSV"
    awk -v t="$now" -v r="$rss" -v s="$snap" 'BEGIN { printf "%7ss %10.1f %14.1f\n", t, r / 1024, s / 1024 }'
done
LOAD_STATUS=0
wait "$LOAD" || LOAD_STATUS=$?
LOAD=""
tail -n 30 "$OUT/load.log"

# The plateau: every sample of the second half of the load within 10% of their mean. Samples
# after DURATION_S (the load generator's closing checks: thousands of GETs, not the constant
# rate the soak is about) stay in the CSV but are not judged.
awk -F, -v half="$((DURATION_S / 2))" -v end="$DURATION_S" '
    NR > 1 && $1 >= half && $1 <= end { n++; rss[n] = $2; snap[n] = $3; rs += $2; ss += $3 }
    END {
        if (n == 0) { print "no samples in the second half"; exit 1 }
        rm = rs / n; sm = ss / n; bad = 0
        for (i = 1; i <= n; i++) {
            if (rss[i] > 1.1 * rm || rss[i] < 0.9 * rm) bad++
            if (sm > 0 && (snap[i] > 1.1 * sm || snap[i] < 0.9 * sm)) bad++
        }
        printf "second half: RSS mean %.1f MiB, snapshot mean %.1f KiB, %d of %d samples outside 10%%\n", rm / 1024, sm / 1024, bad, n
        exit bad > 0
    }' "$CSV" && PLATEAU=flat || PLATEAU=not-flat
echo "== plateau: $PLATEAU; curve in $CSV, load report in $OUT (load exit $LOAD_STATUS)"
[ "$PLATEAU" = flat ] && [ "$LOAD_STATUS" = 0 ]
