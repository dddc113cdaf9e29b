#!/usr/bin/env bash
# Cluster mode against a single node, in one run on this machine (docs/performance.md,
# "Cluster mode"). Both take `surge load --scenario orders` (points orders, one merchant a
# run):
#   1. single node: `surge serve` alone on its log;
#   2. cluster: scripts/etcd.sh's three etcd members (their data reset first) and three
#      `surge serve --etcd` nodes; each run's merchant is chosen (`--merchant-id`) so that
#      its partition is owned by the node the load targets (no forwarding), or, for the
#      forwarded row, by another node.
# Per round: the latency at a low fixed rate (open loop, RATE/s: what replication adds to an
# acknowledged write), and the throughput in closed loop (CONNS connections): the single node
# alone, then the three nodes driven at once, one load per node, each on a partition it owns.
# Everything shares this machine's CPUs: three nodes and three etcd members on two CPUs are
# not three machines, so the per-node throughput is a floor of what separate machines give.
# The closed-loop rows say where the CPU went: the single node's, and in the cluster the etcd
# members', the nodes' and the load generators', in % of one core (this machine has `nproc`
# x 100%), and the orders per CPU-second each side's servers used: what a node would give on
# a machine of its own, were it bound by CPU.
# Knobs (environment): ROUNDS (3), RATE (200), DURATION_S (15), CONNS (64), PARTITIONS (8),
# OUT (load-results/cluster-load), BIN (prebuilt binaries with the cluster feature; skips the build).
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

ROUNDS=${ROUNDS:-3}
RATE=${RATE:-200}
DURATION_S=${DURATION_S:-15}
CONNS=${CONNS:-64}
PARTITIONS=${PARTITIONS:-8}
OUT=${OUT:-load-results/cluster-load}
BIN=${BIN:-}
TOKEN="bench-admin-$$"
PORTS=(18181 18182 18183)
SINGLE_PORT=18180

need_tools jq curl
release_bin -p surge-api --features cluster
mkdir -p "$OUT"
scratch

load() { # NAME TARGET_PORT MERCHANT ARGS... -> writes $OUT/NAME.json
    local name=$1 port=$2 merchant=$3
    shift 3
    "$BIN/surge" load --target "http://127.0.0.1:$port" --admin-token "$TOKEN" --merchant-id "$merchant" \
        --scenario orders --duration "${DURATION_S}s" --quiet \
        --json "$OUT/$name.json" --html "$OUT/$name.html" "$@" >/dev/null
}
summary() { # NAME -> "ops/s p50 p99"
    jq -r '"\(.ops_per_s|floor) orders/s, p50 \(.latency.p50_ms*100|round/100) ms, p99 \(.latency.p99_ms*100|round/100) ms, failed \(.failed_ops)"' "$OUT/$1.json"
}

# CPU seconds (user + system) the processes PID... used so far.
cpu_s() {
    local pid ticks=0
    for pid in "$@"; do
        [ -r "/proc/$pid/stat" ] && ticks=$((ticks + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz }'
}
pct() { # CPU_SECONDS_BEFORE AFTER WALL_SECONDS -> % of one core
    awk -v a="$1" -v b="$2" -v w="$3" 'BEGIN { printf "%.0f", 100 * (b - a) / w }'
}
per_core() { # ORDERS_PER_S CPU_PCT -> orders per CPU-second
    awk -v o="$1" -v p="$2" 'BEGIN { if (p > 0) printf "%.0f", 100 * o / p; else print "-" }'
}

# A merchant id whose partition node PORT_OWNER owns (as node PORT_ASK sees the table).
merchant_owned_by() { # PORT_ASK OWNER_NODE_ID PREFIX
    local i table partition owner
    for i in $(seq 1 500); do
        table=$(curl -sf -H "Authorization: Bearer $TOKEN" "127.0.0.1:$1/v1/cluster?merchant=$3-$i")
        partition=$(jq -r '.merchant.partition' <<<"$table")
        owner=$(jq -r ".owners[$partition].node_id" <<<"$table")
        if [ "$owner" = "$2" ]; then echo "$3-$i"; return 0; fi
    done
    echo "no merchant id owned by $2" >&2
    exit 1
}

echo "== single node"
"$BIN/surge" serve --listen "127.0.0.1:$SINGLE_PORT" --data-dir "$DATA/single" --admin-token "$TOKEN" \
    --merchant-rate-limit 0 >"$DATA/single.log" 2>&1 &
PIDS+=($!)
SINGLE_PID=$!
wait_for "http://127.0.0.1:$SINGLE_PORT/readyz"

echo "== cluster: three etcd members (reset) and three nodes, $PARTITIONS partitions"
scripts/etcd.sh reset >/dev/null
scripts/etcd.sh >/dev/null
ETCD=$(scripts/etcd.sh endpoints)
for i in 0 1 2; do
    "$BIN/surge" serve --listen "127.0.0.1:${PORTS[$i]}" --data-dir "$DATA/n$((i + 1))" --admin-token "$TOKEN" \
        --merchant-rate-limit 0 --etcd "$ETCD" --node-id "n$((i + 1))" --partitions "$PARTITIONS" \
        >"$DATA/n$((i + 1)).log" 2>&1 &
    PIDS+=($!)
done
for port in "${PORTS[@]}"; do wait_for "http://127.0.0.1:$port/readyz"; done
NODE_PIDS=("${PIDS[@]:1}")
mapfile -t ETCD_PIDS < <(pgrep -x etcd)
# Settled: every partition owned, each node at its share.
for _ in $(seq 1 100); do
    moving=$(curl -sf -H "Authorization: Bearer $TOKEN" "127.0.0.1:${PORTS[0]}/v1/cluster" |
        jq '[.owners[] | select(.state == "moving")] | length')
    [ "$moving" = 0 ] && break
    sleep 0.2
done
sleep 2

for round in $(seq 1 "$ROUNDS"); do
    echo "== round $round"
    load "single-latency-$round" "$SINGLE_PORT" "single-lat-$round" --mode open --rate "$RATE"
    echo "single node, open loop $RATE/s:        $(summary "single-latency-$round")"
    m=$(merchant_owned_by "${PORTS[0]}" n1 "own-lat-$round")
    load "cluster-latency-$round" "${PORTS[0]}" "$m" --mode open --rate "$RATE"
    echo "cluster, owner, open loop $RATE/s:     $(summary "cluster-latency-$round")"
    m=$(merchant_owned_by "${PORTS[0]}" n2 "fwd-lat-$round")
    load "cluster-forwarded-$round" "${PORTS[0]}" "$m" --mode open --rate "$RATE"
    echo "cluster, forwarded, open loop $RATE/s: $(summary "cluster-forwarded-$round")"
    single_before=$(cpu_s "$SINGLE_PID")
    started=$(date +%s.%N)
    load "single-closed-$round" "$SINGLE_PORT" "single-tp-$round" --mode closed --connections "$CONNS"
    wall=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
    single_cpu=$(pct "$single_before" "$(cpu_s "$SINGLE_PID")" "$wall")
    echo "single node, closed loop:           $(summary "single-closed-$round")"
    single_ops=$(jq -r '.ops_per_s|floor' "$OUT/single-closed-$round.json")
    echo "single node, closed loop, CPU: node $single_cpu% of one core, $(per_core "$single_ops" "$single_cpu") orders per CPU-second"
    runs=()
    etcd_before=$(cpu_s "${ETCD_PIDS[@]}")
    nodes_before=$(cpu_s "${NODE_PIDS[@]}")
    started=$(date +%s.%N)
    for i in 0 1 2; do
        m=$(merchant_owned_by "${PORTS[0]}" "n$((i + 1))" "tp-$round-n$((i + 1))")
        load "cluster-closed-$round-n$((i + 1))" "${PORTS[$i]}" "$m" --mode closed --connections "$CONNS" &
        runs+=($!)
    done
    for run in "${runs[@]}"; do wait "$run"; done
    wall=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
    etcd_cpu=$(pct "$etcd_before" "$(cpu_s "${ETCD_PIDS[@]}")" "$wall")
    nodes_cpu=$(pct "$nodes_before" "$(cpu_s "${NODE_PIDS[@]}")" "$wall")
    total=0
    for i in 1 2 3; do
        echo "cluster, closed loop, node n$i:      $(summary "cluster-closed-$round-n$i")"
        total=$((total + $(jq -r '.ops_per_s|floor' "$OUT/cluster-closed-$round-n$i.json")))
    done
    echo "cluster, closed loop, three nodes:  $total orders/s"
    loads_cpu=$(jq -s '[.[].generator_cpu_pct // 0] | add | floor' "$OUT"/cluster-closed-"$round"-n?.json)
    echo "cluster, closed loop, CPU (% of one core, $(nproc) cores): etcd members $etcd_cpu, nodes $nodes_cpu, load generators $loads_cpu"
    echo "cluster, closed loop, orders per CPU-second: of the nodes $(per_core "$total" "$nodes_cpu"), of nodes and etcd $(per_core "$total" $((nodes_cpu + etcd_cpu)))"
done
