#!/usr/bin/env bash
# Where the open-loop tail of `POST /v1/orders` is spent, at half of surge's own maximum:
#   1. starts `surge serve` (durable, points payments) and `surge-baseline` (bare axum, the
#      same JSON parsed, nothing kept), both pinned to the server CPU(s), the load generator
#      pinned to the other CPU(s);
#   2. finds surge's closed-loop maximum (64 connections) and takes half of it as RATE;
#   3. in ROUNDS alternating rounds, drives surge and then the baseline in open loop at
#      RATE, and for each prints the client-side p50/p99/p99.9 (from each operation's due
#      time: no coordinated omission) and, for surge, the server-side p99 (its /metrics
#      histogram: parsed request to built answer, durability wait included) and the p99 of
#      its group commits (a shard's append to durable: queue, write, fdatasync);
#   4. reads every server thread's scheduler statistics (/proc/PID/task/*/schedstat: time
#      on the CPU, time runnable but waiting for it, times scheduled) over each surge round,
#      and prints them per thread name and per request.
# The baseline at the same rate is the machine's floor: loopback, the generator, the kernel's
# scheduling of a server that does almost nothing. What surge adds above it, and how much
# of that is its threads waiting for the one server CPU, is what this script is for.
# The machine must be otherwise idle. Knobs (environment): DURATION (20s), ROUNDS (3),
# CONNECTIONS (64), SERVER_CPUS (0), LOAD_CPUS (1), RATE (skip step 2), SURGE_FLAGS (extra
# `surge serve` flags), OUT (load-results/open-loop-tail), CARGO_TARGET_DIR (target), BIN
# (prebuilt binaries; skips the build).
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

DURATION=${DURATION:-20s}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-64}
SERVER_CPUS=${SERVER_CPUS:-0}
LOAD_CPUS=${LOAD_CPUS:-1}
RATE=${RATE:-}
SURGE_FLAGS=${SURGE_FLAGS:-}
OUT=${OUT:-load-results/open-loop-tail}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN=${BIN:-}
TOKEN="bench-admin-$$"
BPORT=${BPORT:-18091}
SPORT=${SPORT:-18081}

need_tools jq curl

release_bin -p surge-api -p surge-load

scratch
mkdir -p "$OUT"

# shellcheck disable=SC2086 # SURGE_FLAGS is a list of flags
(pin "$SERVER_CPUS" "$BIN/surge" serve --listen "127.0.0.1:$SPORT" --data-dir "$DATA" --admin-token "$TOKEN" \
    $SURGE_FLAGS 2>"$OUT/surge.log" >/dev/null) &
PIDS+=($!)
(pin "$SERVER_CPUS" "$BIN/surge-baseline" --listen "127.0.0.1:$BPORT" 2>"$OUT/baseline.log" >/dev/null) &
PIDS+=($!)
SURGE_PID=${PIDS[0]}
wait_for "http://127.0.0.1:$SPORT/readyz"
wait_for "http://127.0.0.1:$BPORT/healthz"

load() {
    (pin "$LOAD_CPUS" "$BIN/surge-load" --scenario orders --duration "$DURATION" --connections "$CONNECTIONS" \
        --threads 1 --quiet "$@") >/dev/null || true
}

# "name on_cpu_ns wait_ns slices" per thread of surge (thread names from /proc/.../comm).
sched_sample() {
    local task
    for task in /proc/"$SURGE_PID"/task/*; do
        [ -r "$task/schedstat" ] || continue
        printf '%s %s\n' "$(tr ' ' '_' <"$task/comm")" "$(cat "$task/schedstat")"
    done 2>/dev/null | sort
}
# Two samples and the round's requests -> per thread name: CPU and run-queue wait per request.
sched_report() {
    join -a1 -e0 -o '1.1,1.2,1.3,1.4,2.2,2.3,2.4' <(awk '{a[$1]+=$2; w[$1]+=$3; n[$1]+=$4} END {for (k in a) print k, a[k], w[k], n[k]}' "$2" | sort) \
        <(awk '{a[$1]+=$2; w[$1]+=$3; n[$1]+=$4} END {for (k in a) print k, a[k], w[k], n[k]}' "$1" | sort) |
        awk -v req="$3" '{ cpu = ($2 - $5) / req / 1000; wait = ($3 - $6) / req / 1000; sl = ($4 - $7);
            if (sl > 0) printf "    %-18s cpu %7.2f us/req   waiting for the CPU %7.2f us/req   %8d slices, mean wait %6.1f us\n",
                $1, cpu, wait, sl, ($3 - $6) / sl / 1000 }'
}

# "le cumulative_count" per bucket of a histogram in surge's /metrics, summed over the
# series whose line matches the awk pattern (shards, for the log's histogram).
buckets() {
    curl -sf "http://127.0.0.1:$SPORT/metrics" |
        awk -v re="$1" '$0 ~ re { match($0, /le="[^"]*"/); le = substr($0, RSTART + 4, RLENGTH - 5);
            if (!(le in n)) order[++k] = le; n[le] += $NF } END { for (i = 1; i <= k; i++) print order[i], n[order[i]] }'
}
ORDERS='^surge_http_request_duration_seconds_bucket[{]route="/v1/orders",method="POST",'
COMMITS='^surge_log_group_commit_seconds_bucket'
server_p99() { # before-file after-file -> "<= X ms" (the bucket bound holding 99%); an empty
    # before-file counts as zeros (a histogram with no sample yet is not in /metrics)
    awk 'FILENAME == ARGV[1] { b[$1] = $2; next } { le[++k] = $1; d[k] = $2 - b[$1] } END {
        total = d[k]; if (total <= 0) { print "n/a"; exit }
        for (i = 1; i <= k; i++) if (d[i] >= 0.99 * total) {
            if (le[i] == "+Inf") print "> " le[i - 1] * 1000 " ms"; else print "<= " le[i] * 1000 " ms"; exit } }' "$1" "$2"
}

if [ -z "$RATE" ]; then
    echo "== surge closed loop, $CONNECTIONS connections, $DURATION: its maximum"
    load --target "http://127.0.0.1:$SPORT" --admin-token "$TOKEN" --mode closed --json "$OUT/max.json"
    RATE=$(jq -r '(.requests_per_s / 2) | floor' "$OUT/max.json")
    echo "  $(jq -r '.requests_per_s | floor' "$OUT/max.json") orders/s; half: $RATE/s"
fi

summary() { # json -> "p50 p99 p99.9 ms"
    jq -r '"p50 \(.latency.p50_ms) ms  p99 \(.latency.p99_ms) ms  p99.9 \(.latency.p999_ms // "n/a") ms  checks \(.passed)"' "$1"
}

for round in $(seq 1 "$ROUNDS"); do
    echo "== round $round: open loop at $RATE/s, $DURATION"
    buckets "$ORDERS" >"$OUT/buckets-$round-0.txt"
    buckets "$COMMITS" >"$OUT/commits-$round-0.txt"
    sched_sample >"$OUT/sched-$round-0.txt"
    s0=$(steal_sample "$SERVER_CPUS")
    load --target "http://127.0.0.1:$SPORT" --admin-token "$TOKEN" --mode open --rate "$RATE" \
        --json "$OUT/surge-$round.json" --html "$OUT/surge-$round.html"
    steal=$(steal_percent "$s0" "$(steal_sample "$SERVER_CPUS")")
    sched_sample >"$OUT/sched-$round-1.txt"
    buckets "$ORDERS" >"$OUT/buckets-$round-1.txt"
    buckets "$COMMITS" >"$OUT/commits-$round-1.txt"
    echo "  surge     $(summary "$OUT/surge-$round.json"); server-side p99 $(server_p99 "$OUT/buckets-$round-0.txt" "$OUT/buckets-$round-1.txt"); steal $steal %"
    echo "    group commits (append to durable): p99 $(server_p99 "$OUT/commits-$round-0.txt" "$OUT/commits-$round-1.txt")"
    sched_report "$OUT/sched-$round-0.txt" "$OUT/sched-$round-1.txt" "$(jq -r .requests "$OUT/surge-$round.json")"
    s0=$(steal_sample "$SERVER_CPUS")
    load --target "http://127.0.0.1:$BPORT" --skip-setup --mode open --rate "$RATE" \
        --json "$OUT/baseline-$round.json" --html "$OUT/baseline-$round.html"
    steal=$(steal_percent "$s0" "$(steal_sample "$SERVER_CPUS")")
    echo "  baseline  $(summary "$OUT/baseline-$round.json" | sed 's/  checks .*//'); steal $steal %"
done
echo "  reports: $OUT/*.html, results: $OUT/*.json"
