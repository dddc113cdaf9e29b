#!/usr/bin/env bash
# The flash-sale write on what a user would pick instead of surge, and on surge, in one run
# on this machine (issue 17, section 1): one hot SKU, an idempotency key per order,
# decrement the stock, record the order, durable before the answer; closed loop,
# $CONNECTIONS connections, the server pinned to $SERVER_CPUS and the load to $LOAD_CPUS.
#   redis:   Debian's redis-server (installed here when missing), AOF with
#            `appendfsync always`, one Lua script per order (EVALSHA: key seen? else stock
#            check, DECR, order hash, key stored), driven by redis-benchmark;
#   mariadb: the MariaDB already running on 127.0.0.1:3306 (scripts/services.sh), InnoDB with
#            innodb_flush_log_at_trx_commit as configured (printed; 1 = flush at commit), a
#            transaction per order: SELECT ... FOR UPDATE on the item, UPDATE, INSERT of the
#            order with a UUID() key under a unique index, COMMIT; driven by mariadb-slap. It
#            is the shared instance other work uses: it is not pinned (re-pinning it would
#            move others' database), and mariadb-slap gives no per-order latency;
#   surge:   `surge serve` and `surge-load --scenario orders` (POST /v1/orders, points
#            payment, ledger postings, events, Idempotency-Key), as http_vs_baseline.sh.
# Prints orders/s and p50/p99 for each and surge's ratio to each.
# Knobs (environment): DURATION (10s, surge), CONNECTIONS (64), REDIS_ORDERS (300000),
# MARIADB_ORDERS (40000), SERVER_CPUS (0), LOAD_CPUS (1), OUT (load-results/peers),
# CARGO_TARGET_DIR (target), BIN (prebuilt binaries; skips the build), RPORT (16379),
# SPORT (18680).
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
REDIS_ORDERS=${REDIS_ORDERS:-300000}
MARIADB_ORDERS=${MARIADB_ORDERS:-40000}
SERVER_CPUS=${SERVER_CPUS:-0}
LOAD_CPUS=${LOAD_CPUS:-1}
OUT=${OUT:-load-results/peers}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN=${BIN:-}
RPORT=${RPORT:-16379}
SPORT=${SPORT:-18680}
TOKEN="bench-admin-$$"
DB="surge_peers_$$"

need_tools jq curl mariadb mariadb-slap
if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
    echo "== installing Debian's redis-server"
    SUDO=$([ "$(id -u)" -eq 0 ] || echo sudo)
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >/dev/null
fi
release_bin -p surge-api -p surge-load
mkdir -p "$OUT"
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    stop_pids
    mariadb -u root -e "DROP DATABASE IF EXISTS $DB" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
steal_of() { # name, then the command: runs it, prints its steal line
    local name=$1 s0 l0
    shift
    s0=$(steal_sample "$SERVER_CPUS")
    l0=$(steal_sample "$LOAD_CPUS")
    "$@"
    printf '%-8s steal: server CPUs %s %%, load CPUs %s %%\n' "$name" \
        "$(steal_percent "$s0" "$(steal_sample "$SERVER_CPUS")")" \
        "$(steal_percent "$l0" "$(steal_sample "$LOAD_CPUS")")" >>"$OUT/steal.txt"
}
: >"$OUT/steal.txt"

echo "== redis: AOF appendfsync always, one Lua script per order, $CONNECTIONS connections, $REDIS_ORDERS orders"
(pin "$SERVER_CPUS" redis-server --port "$RPORT" --bind 127.0.0.1 --dir "$WORK" --appendonly yes \
    --appendfsync always --save "" --protected-mode no >"$OUT/redis.log" 2>&1) &
PIDS+=($!)
for _ in $(seq 1 100); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p "$RPORT" set stock:hot 1000000000000 >/dev/null
# KEYS: the item's stock, the order's idempotency key; ARGV: the customer.
SHA=$(redis-cli -p "$RPORT" script load "
local seen = redis.call('GET', KEYS[2])
if seen then return seen end
if tonumber(redis.call('GET', KEYS[1])) < 1 then return redis.error_reply('insufficient_stock') end
redis.call('DECR', KEYS[1])
local id = redis.call('INCR', 'order:seq')
redis.call('HSET', 'order:' .. id, 'sku', 'hot', 'qty', 1, 'customer', ARGV[1])
redis.call('SET', KEYS[2], id, 'EX', 86400)
return id")
# __rand_int__ in a key: a random key per order out of 2e9 (-r takes an int; a few of 300,000
# collide and replay), as an Idempotency-Key would be.
steal_of redis sh -c "taskset -c '$LOAD_CPUS' redis-benchmark -p '$RPORT' -c '$CONNECTIONS' -n '$REDIS_ORDERS' \
    -r 2000000000 --csv evalsha '$SHA' 2 stock:hot idem:__rand_int__ c-1 >'$OUT/redis.csv'"
REDIS=$(awk -F'"' 'NR == 2 { print $4, $10, $14 }' "$OUT/redis.csv") # rps p50 p99
ORDERS=$(redis-cli -p "$RPORT" get order:seq)
echo "  $(echo "$REDIS" | awk '{ printf "%.0f orders/s, p50 %s ms, p99 %s ms", $1, $2, $3 }') ($ORDERS orders recorded)"

# mariadb-slap counts statements (five per order below) and splits them over the clients, so a
# multiple of 5 x clients leaves no transaction cut short.
MARIADB_ORDERS=$(((MARIADB_ORDERS / CONNECTIONS) * CONNECTIONS))
echo "== mariadb: InnoDB, a row lock per order, $CONNECTIONS connections, $MARIADB_ORDERS orders"
FLUSH=$(mariadb -u root -N -e 'SELECT @@innodb_flush_log_at_trx_commit')
mariadb -u root -e "CREATE DATABASE $DB; USE $DB;
    CREATE TABLE items (sku VARCHAR(64) PRIMARY KEY, stock BIGINT NOT NULL) ENGINE=InnoDB;
    CREATE TABLE orders (id BIGINT AUTO_INCREMENT PRIMARY KEY, idem_key CHAR(36) NOT NULL UNIQUE,
        sku VARCHAR(64) NOT NULL, qty INT NOT NULL, customer VARCHAR(64) NOT NULL) ENGINE=InnoDB;
    INSERT INTO items VALUES ('hot', 1000000000000);"
QUERY="START TRANSACTION;SELECT stock FROM items WHERE sku='hot' FOR UPDATE;UPDATE items SET stock=stock-1 WHERE sku='hot' AND stock>=1;INSERT INTO orders (idem_key, sku, qty, customer) VALUES (UUID(), 'hot', 1, 'c-1');COMMIT"
steal_of mariadb sh -c "taskset -c '$LOAD_CPUS' mariadb-slap -u root --create-schema='$DB' --no-drop \
    --concurrency='$CONNECTIONS' --iterations=1 --number-of-queries=$((MARIADB_ORDERS * 5)) \
    --delimiter=';' --query=\"$QUERY\" >'$OUT/mariadb.txt' 2>&1"
SECONDS_ALL=$(awk '/Average number of seconds to run all queries/ { print $(NF - 1) }' "$OUT/mariadb.txt")
MARIA_ORDERS=$(mariadb -u root -N -e "SELECT COUNT(*) FROM $DB.orders")
MARIADB=$(jq -rn --argjson n "$MARIA_ORDERS" --argjson s "$SECONDS_ALL" '$n / $s | round')
echo "  $MARIADB orders/s ($MARIA_ORDERS orders in $SECONDS_ALL s; innodb_flush_log_at_trx_commit=$FLUSH)"

echo "== surge: POST /v1/orders (points, ledger, events, Idempotency-Key), $CONNECTIONS connections, $DURATION"
(pin "$SERVER_CPUS" "$BIN/surge" serve --listen "127.0.0.1:$SPORT" --data-dir "$WORK/surge" --admin-token "$TOKEN" \
    2>"$OUT/surge.log" >/dev/null) &
PIDS+=($!)
wait_for "http://127.0.0.1:$SPORT/readyz"
steal_of surge sh -c "taskset -c '$LOAD_CPUS' '$BIN/surge-load' --target 'http://127.0.0.1:$SPORT' --admin-token '$TOKEN' \
    --scenario orders --mode closed --connections '$CONNECTIONS' --duration '$DURATION' --quiet \
    --json '$OUT/surge.json' --html '$OUT/surge.html' >/dev/null || true"
SURGE=$(jq -r '"\(.requests_per_s) \(.latency.p50_ms) \(.latency.p99_ms) \(.passed)"' "$OUT/surge.json")
echo "  $(echo "$SURGE" | awk '{ printf "%.0f orders/s, p50 %s ms, p99 %s ms, checks %s", $1, $2, $3, $4 }')"

echo
echo "== result (closed loop, $CONNECTIONS connections)"
printf '  %-8s %10s %10s %10s\n' "" "orders/s" "p50 ms" "p99 ms"
echo "$REDIS" | awk '{ printf "  %-8s %10.0f %10s %10s\n", "redis", $1, $2, $3 }'
printf '  %-8s %10s %10s %10s\n' mariadb "$MARIADB" n/a n/a
echo "$SURGE" | awk '{ printf "  %-8s %10.0f %10.2f %10.2f\n", "surge", $1, $2, $3 }'
R=$(echo "$REDIS" | awk '{ print $1 }')
S=$(echo "$SURGE" | awk '{ print $1 }')
awk -v s="$S" -v r="$R" -v m="$MARIADB" 'BEGIN { printf "  surge / redis %.2f (target >= 2), surge / mariadb %.1f\n", s / r, s / m }'
sed 's/^/  /' "$OUT/steal.txt"
