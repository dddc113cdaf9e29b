#!/usr/bin/env bash
# JSON batches against binary batches (docs/batch-format.md) of durable, keyed points orders,
# in the same run on this machine:
#   1. each round starts a fresh `surge serve` pinned to the server CPU(s) (fresh data
#      directory: every round meets the same state size) and drives it from the other CPU(s)
#      with `surge-load` in closed loop, alternating
#        json:   --scenario batch, $JSON_BATCH create_order ops per POST /v1/batch,
#                $JSON_CONNECTIONS connections;
#        binary: --scenario batch-binary, $CALLERS concurrent callers gathered by
#                surge-client into binary batches over $CLIENT_CONNECTIONS connections;
#   2. prints per round: orders acknowledged per second, server CPU per order, the load
#      generator's CPU, steal on both sides, the scenario's invariant checks; then medians;
#   3. with PERF=1 (default) a last binary round runs with the server under `perf record`
#      (DWARF call graphs, 3 s): its CPU by thread and by part, top symbols in $OUT.
# Knobs (environment): DURATION (10s), ROUNDS (3), JSON_BATCH (100), JSON_CONNECTIONS (16),
# CALLERS (4096), CLIENT_CONNECTIONS (4), SERVER_CPUS (0), LOAD_CPUS (1), PERF (1),
# OUT (load-results/batch-binary), CARGO_TARGET_DIR (target), BIN (prebuilt binaries; skips
# the build), SPORT (18480).
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
JSON_BATCH=${JSON_BATCH:-100}
JSON_CONNECTIONS=${JSON_CONNECTIONS:-16}
CALLERS=${CALLERS:-4096}
CLIENT_CONNECTIONS=${CLIENT_CONNECTIONS:-4}
SERVER_CPUS=${SERVER_CPUS:-0}
LOAD_CPUS=${LOAD_CPUS:-1}
PERF=${PERF:-1}
OUT=${OUT:-load-results/batch-binary}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN=${BIN:-}
SPORT=${SPORT:-18480}
TOKEN="bench-admin-$$"

for tool in jq curl; do
    command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 2; }
done
if [ -z "$BIN" ]; then
    echo "== building (release)"
    cargo build --release --locked -p surge-api -p surge-load
    BIN="$CARGO_TARGET_DIR/release"
fi
mkdir -p "$OUT"

SPID=
DATA=
stop_server() {
    if [ -n "$SPID" ]; then
        kill "$SPID" 2>/dev/null || true
        wait "$SPID" 2>/dev/null || true
        SPID=
    fi
    if [ -n "$DATA" ]; then rm -rf "$DATA"; DATA=; fi
}
trap stop_server EXIT
start_server() {
    DATA=$(mktemp -d)
    (pin "$SERVER_CPUS" "$BIN/surge" serve --listen "127.0.0.1:$SPORT" --data-dir "$DATA" --admin-token "$TOKEN" \
        2>>"$OUT/surge.log" >/dev/null) &
    SPID=$!
    wait_for "http://127.0.0.1:$SPORT/readyz"
}

ROWS="$OUT/rounds.tsv"
printf 'round\tkind\torders_per_s\tserver_us_per_order\tload_cpu_pct\tsteal_server_pct\tsteal_load_pct\tp50_ms\tp99_ms\tchecks\torders_per_batch\n' >"$ROWS"

# run KIND ROUND: one fresh server, one load run; appends a row.
run() {
    local kind=$1 round=$2 json="$OUT/$1-$2.json" t0 t1 s0 l0 args
    start_server
    if [ "$kind" = json ]; then
        args=(--scenario batch --batch-size "$JSON_BATCH" --connections "$JSON_CONNECTIONS")
    else
        args=(--scenario batch-binary --connections "$CALLERS" --client-connections "$CLIENT_CONNECTIONS")
    fi
    t0=$(cpu_ticks "$SPID")
    s0=$(steal_sample "$SERVER_CPUS")
    l0=$(steal_sample "$LOAD_CPUS")
    (pin "$LOAD_CPUS" "$BIN/surge-load" --target "http://127.0.0.1:$SPORT" --admin-token "$TOKEN" --mode closed \
        --duration "$DURATION" --quiet --json "$json" --html "$OUT/$kind-$round.html" "${args[@]}" \
        >"$OUT/$kind-$round.txt") || true
    t1=$(cpu_ticks "$SPID")
    # Batches the server answered (set-up's few included): orders per batch.
    local batches
    batches=$(curl -sf "http://127.0.0.1:$SPORT/metrics" |
        awk '/^surge_http_requests_total\{route="\/v1\/batch",method="POST",status="200"\}/ { n += $NF } END { print n + 0 }')
    local ss ls
    ss=$(steal_percent "$s0" "$(steal_sample "$SERVER_CPUS")")
    ls=$(steal_percent "$l0" "$(steal_sample "$LOAD_CPUS")")
    stop_server
    # Orders acknowledged (201): inside the JSON batches, or one per binary caller's op.
    local ok
    if [ "$kind" = json ]; then
        ok=$(jq -r '.inner_ok // 0' "$json")
    else
        ok=$(jq -r '[.outcomes[] | select(.label == "201") | .count] | add // 0' "$json")
    fi
    jq -rn --arg round "$round" --arg kind "$kind" --argjson ok "$ok" --argjson t "$((t1 - t0))" \
        --argjson hz "$TICK_HZ" --arg ss "$ss" --arg ls "$ls" --argjson batches "$batches" --slurpfile r "$json" '
        $r[0] as $r |
        [$round, $kind, ($ok / $r.elapsed_s | round),
         (if $ok > 0 then ($t / $hz * 1e6 / $ok * 100 | round) / 100 else "n/a" end),
         (($r.generator_cpu_pct // 0) | round), $ss, $ls, $r.latency.p50_ms, $r.latency.p99_ms,
         (if $r.passed then "pass" else "FAIL" end),
         (if $batches > 0 then $ok / $batches | round else "n/a" end)] | @tsv' >>"$ROWS"
    tail -1 "$ROWS" | awk -F'\t' '{ printf "  round %s %-6s %9s orders/s  %6s us/order  %5s orders/batch  load CPU %s %%  steal server %s %% load %s %%  p50 %s ms p99 %s ms  checks %s\n", $1, $2, $3, $4, $11, $5, $6, $7, $8, $9, $10 }'
}

echo "== $ROUNDS alternating rounds of $DURATION: json ($JSON_BATCH ops per request, $JSON_CONNECTIONS connections) and binary ($CALLERS callers, $CLIENT_CONNECTIONS connections); server CPUs $SERVER_CPUS, load CPUs $LOAD_CPUS"
for r in $(seq 1 "$ROUNDS"); do
    run json "$r"
    run binary "$r"
done

median() { # KIND COLUMN
    awk -F'\t' -v k="$1" -v c="$2" 'NR > 1 && $2 == k { print $c }' "$ROWS" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
echo
echo "== medians"
for kind in json binary; do
    printf '  %-6s %9s orders/s  %6s us of server CPU per order\n' "$kind" "$(median "$kind" 3)" "$(median "$kind" 4)"
done
awk -v j="$(median json 3)" -v b="$(median binary 3)" 'BEGIN { if (j > 0) printf "  binary / json: %.2f\n", b / j }'

if [ "$PERF" = 1 ] && command -v perf >/dev/null; then
    echo "== perf: one more binary round, the server sampled 3 s with DWARF call graphs"
    start_server
    (pin "$LOAD_CPUS" "$BIN/surge-load" --target "http://127.0.0.1:$SPORT" --admin-token "$TOKEN" --mode closed \
        --duration "$DURATION" --quiet --json "$OUT/binary-perf.json" --scenario batch-binary \
        --connections "$CALLERS" --client-connections "$CLIENT_CONNECTIONS" >/dev/null) &
    LPID=$!
    sleep 4 # past set-up
    # DWARF: the release build keeps no frame pointers, so -g alone loses the callers.
    perf record -F 199 --call-graph dwarf,8192 -p "$SPID" -o "$OUT/perf.data" -- sleep 3 \
        2>"$OUT/perf-record.log" >/dev/null || true
    wait "$LPID" || true
    stop_server
    perf report -i "$OUT/perf.data" --stdio --no-children --sort comm -g none 2>/dev/null | grep '%' >"$OUT/perf-threads.txt" || true
    perf report -i "$OUT/perf.data" --stdio --children --sort symbol -g none --percent-limit 0 2>/dev/null |
        grep '%' >"$OUT/perf-children.txt" || true
    perf report -i "$OUT/perf.data" --stdio --no-children --sort symbol -g none --percent-limit 0.7 2>/dev/null |
        grep '%' >"$OUT/perf-self.txt" || true
    share() { # the first frame matching the pattern: its share with everything it called
        awk -v re="$1" '$0 ~ re { print $1; found = 1; exit } END { if (!found) print "0%" }' "$OUT/perf-children.txt"
    }
    echo "  server CPU by thread:"
    sed 's/^/    /' "$OUT/perf-threads.txt" | head -6
    echo "  server CPU by part (inclusive):"
    printf '    %-8s %s\n' \
        "$(share 'Engine::execute_batch')" "execute_batch: the ops under the shard's lock (core + event encoding)" \
        "$(share 'Shard>::execute  ')" "  core: Shard::execute (idempotency, decide, apply)" \
        "$(share 'encoding::encode_events  ')" "  event encoding for the log (postcard)" \
        "$(share 'batch_bin::requests')" "binary decode + requests (twin JSON, SHA-256 fingerprint)" \
        "$(share 'write_snapshots')" "snapshot thread (encoding the state)" \
        "$(share 'surge_wal::writer::run')" "log writer thread"
    echo "  top symbols (self time): $OUT/perf-self.txt"
fi
echo "  rounds: $ROWS; reports: $OUT/*.html"
