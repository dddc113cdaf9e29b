#!/usr/bin/env bash
# Judges the relay target of design.md in one run on this machine: the relay's catch-up rate
# to each sink must exceed the event rate the server produces at full order load.
#   1. starts `surge serve` (no relay) on an empty data directory, no snapshots, and drives
#      it with `surge-load --scenario orders` in closed loop (max requests/s) for DURATION;
#      the events it logged / DURATION is the server's event rate;
#   2. stops it, then runs `surge relay --until-caught-up` on that directory once per sink
#      (Kafka, then MariaDB; fresh topics and database) and times the catch-up from LSN 1;
#   3. (MariaDB on this machine, CEILING=1) loads the `events` rows the relay wrote again,
#      by `LOAD DATA` with no relay at all, into the relay's table and into leaner ones, and
#      prints mariadbd's CPU per row: the fastest any relay could go on this machine's cores.
# Needs the broker and MariaDB of scripts/services.sh, plus jq and the mariadb client.
# Knobs (environment): DURATION (15s), CONNECTIONS (64), SINKS ("kafka mariadb"), CEILING (1),
# OUT (load-results/relay-catchup),
# CARGO_TARGET_DIR (target), KAFKA (127.0.0.1:9092), MARIADB (mysql://root@127.0.0.1:3306).
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

DURATION=${DURATION:-15s}
SINKS=${SINKS:-kafka mariadb}
CONNECTIONS=${CONNECTIONS:-64}
OUT=${OUT:-load-results/relay-catchup}
KAFKA=${KAFKA:-127.0.0.1:9092}
MARIADB=${MARIADB:-mysql://root@127.0.0.1:3306}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN="$CARGO_TARGET_DIR/release"
TOKEN="bench-admin-$$"
PORT=${PORT:-18180}
DB="surge_bench_$$"

need_tools jq curl mariadb

echo "== building (release)"
cargo build --release --locked -p surge-api -p surge-load

DATA=$(mktemp -d)
SERVER=
cleanup() {
    if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
    mariadb -h 127.0.0.1 -u root -e "DROP DATABASE IF EXISTS $DB" 2>/dev/null || true
    rm -rf "$DATA"
}
trap cleanup EXIT
mkdir -p "$OUT"

"$BIN/surge" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA" --admin-token "$TOKEN" --snapshot-every 0 \
    2>"$OUT/surge.log" >/dev/null &
SERVER=$!
for _ in $(seq 1 100); do
    if curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null; then break; fi
    sleep 0.1
done

echo "== server: POST /v1/orders (points, durable), closed loop, $CONNECTIONS connections, $DURATION"
"$BIN/surge-load" --target "http://127.0.0.1:$PORT" --admin-token "$TOKEN" --scenario orders --mode closed \
    --duration "$DURATION" --connections "$CONNECTIONS" --quiet --json "$OUT/load.json" || true
kill -TERM "$SERVER"
wait "$SERVER" || true
SERVER=

SECONDS_LOADED=$(jq -r .duration_s "$OUT/load.json")
REQ_RATE=$(jq -r .requests_per_s "$OUT/load.json")
"$BIN/surge" wal inspect "$DATA" >"$OUT/inspect.txt"
EVENTS=$(awk '/^events after the snapshot:/ {print $5}' "$OUT/inspect.txt")
RECORDS=$(awk '/^last LSN:/ {print $3}' "$OUT/inspect.txt")
PUBLIC=$(awk '/^  / && $1 !~ /^idempotency\./ {n += $2} END {print n + 0}' "$OUT/inspect.txt")
EVENT_RATE=$(jq -rn --argjson e "$EVENTS" --argjson s "$SECONDS_LOADED" '$e / $s | floor')

catchup() { # sink name, flags...
    local name=$1
    shift
    local start end
    start=$(date +%s.%N)
    "$BIN/surge" relay --data-dir "$DATA" --until-caught-up "$@" 2>"$OUT/relay-$name.log"
    end=$(date +%s.%N)
    jq -rn --argjson a "$start" --argjson b "$end" '$b - $a'
}

KAFKA_S= MARIA_S=
if [[ " $SINKS " == *" kafka "* ]]; then
    echo "== relay to Kafka ($KAFKA) from LSN 1: $RECORDS records, $EVENTS events ($PUBLIC published)"
    KAFKA_S=$(catchup kafka --kafka-brokers "$KAFKA" --kafka-topic-prefix "bench$$.")
fi
if [[ " $SINKS " == *" mariadb "* ]]; then
    mariadb -h 127.0.0.1 -u root -e "CREATE DATABASE $DB"
    echo "== relay to MariaDB from LSN 1: $RECORDS records, $EVENTS events"
    MARIA_S=$(catchup mariadb --mariadb-url "$MARIADB/$DB")
fi

rate() { jq -rn --argjson n "$1" --argjson s "$2" '$n / $s | floor'; }

# mariadbd's CPU time in clock ticks (a local server only).
MARIADBD=$(pgrep -x mariadbd | head -n 1 || true)
maria_ticks() { awk '{print $14 + $15}' "/proc/$MARIADBD/stat"; }
# Loads $DATA/events.tsv into a fresh table of the given definition; prints mariadbd's
# CPU microseconds per row. Columns not in the table go to @skip.
load_cost() { # table definition, column list
    local t0 t1
    mariadb -h 127.0.0.1 -u root "$DB" -e "DROP TABLE IF EXISTS ceiling; CREATE TABLE ceiling $1"
    t0=$(maria_ticks)
    mariadb --local-infile=1 -h 127.0.0.1 -u root "$DB" -e "SET SESSION check_constraint_checks = 0; LOAD DATA LOCAL INFILE '$DATA/events.tsv' \
        INTO TABLE ceiling CHARACTER SET utf8mb4 $2"
    t1=$(maria_ticks)
    jq -rn --argjson t "$((t1 - t0))" --argjson hz "$(getconf CLK_TCK)" --argjson n "$ROWS" \
        '($t / $hz * 1e6 / $n * 100 | round) / 100'
}
CEILINGS=()
if [ -n "$MARIA_S" ] && [ "${CEILING:-1}" = 1 ] && [ -n "$MARIADBD" ]; then
    mariadb -N -B -h 127.0.0.1 -u root "$DB" \
        -e "SELECT lsn, idx, event_id, type, merchant_id, aggregate_id, occurred_at, envelope FROM events" \
        >"$DATA/events.tsv"
    ROWS=$(wc -l <"$DATA/events.tsv")
    echo "== MariaDB alone: the $ROWS \`events\` rows again by LOAD DATA, no relay (mariadbd CPU per row)"
    ALL="(lsn, idx, event_id, type, merchant_id, aggregate_id, occurred_at, envelope)"
    mariadb -h 127.0.0.1 -u root "$DB" -e "CREATE TABLE ceiling_like LIKE events"
    for variant in "relay's events table|LIKE events|$ALL" \
        "  without events_by_aggregate|LIKE ceiling_like|$ALL" \
        "  (lsn, idx, envelope) only|(lsn BIGINT UNSIGNED, idx INT UNSIGNED, envelope LONGBLOB, PRIMARY KEY (lsn, idx))|(lsn, idx, @s, @s, @s, @s, @s, envelope)" \
        "  (lsn, idx) kept, rest parsed|(lsn BIGINT UNSIGNED, idx INT UNSIGNED, PRIMARY KEY (lsn, idx))|(lsn, idx, @s, @s, @s, @s, @s, @s)"; do
        IFS='|' read -r label definition columns <<<"$variant"
        if [ "$definition" = "LIKE ceiling_like" ]; then
            mariadb -h 127.0.0.1 -u root "$DB" -e "ALTER TABLE ceiling_like DROP INDEX events_by_aggregate"
        fi
        CEILINGS+=("$label|$(load_cost "$definition" "$columns")")
    done
fi
echo
echo "== result"
printf '  server at full order load   %8.0f req/s  %8s events/s  (%s events in %ss)\n' "$REQ_RATE" "$EVENT_RATE" "$EVENTS" "$SECONDS_LOADED"
if [ -n "$KAFKA_S" ]; then
    printf '  relay catch-up to Kafka     %8s s      %8s events/s  (%s published messages/s)\n' \
        "$(printf %.2f "$KAFKA_S")" "$(rate "$EVENTS" "$KAFKA_S")" "$(rate "$PUBLIC" "$KAFKA_S")"
fi
if [ -n "$MARIA_S" ]; then
    printf '  relay catch-up to MariaDB   %8s s      %8s events/s\n' "$(printf %.2f "$MARIA_S")" "$(rate "$EVENTS" "$MARIA_S")"
fi
for c in "${CEILINGS[@]}"; do
    IFS='|' read -r label us <<<"$c"
    # Every core given to mariadbd and none to the relay: the most log events per second.
    printf '  MariaDB alone, %-32s %6s us CPU/row: at most %8s events/s on %s cores\n' "$label" "$us" \
        "$(jq -rn --argjson us "$us" --argjson e "$EVENTS" --argjson r "$ROWS" --argjson c "$(nproc)" \
            '$c * 1e6 / $us * $e / $r | floor')" "$(nproc)"
done
echo "  (target: each catch-up rate above the server's event rate)"
