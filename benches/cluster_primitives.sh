#!/usr/bin/env bash
# Measures the primitives a surge cluster would stand on (docs/cluster.md), on loopback:
#   1. a three-member etcd (Debian's etcd-server and etcd-client): latency of a put, of a txn
#      compare-and-swap on the owner key's revision (the fencing check), of a lease grant and
#      of a lease keep-alive, each sequential over one connection (p50/p99); then the time for
#      a lease to expire and another client to take the key after its holder is SIGKILLed,
#      and after it is SIGSTOPped (and, once SIGCONTed, whether its fenced write is refused);
#   2. the Kafka-protocol broker of scripts/services.sh (tansu, one broker): produce latency
#      with acks=all, a transaction per write, producer-epoch fencing, read_committed and a
#      consumer group's rebalance, as far as the broker supports them;
#   3. whether a real three-broker Apache Kafka could be set up here (JDK from Debian, the
#      broker's Maven artifact): checks only, downloads nothing large.
# Installs what it needs from Debian (etcd-server, etcd-client, kcat, python3-confluent-kafka)
# when missing. Debian's librdkafka may be too old for the broker's ApiVersions answer; then
# the Kafka probe runs in a venv with PyPI's confluent-kafka (its wheel bundles a newer
# librdkafka), made once under ~/.cache/surge.
#   4. Option C, a partition's log as etcd keys (part etcd-log): a group commit as one txn
#      guarded by the owner key's create revision, payloads of LOG_SIZES bytes, LOG_CONC
#      partitions appending at once (one txn in flight each), LOG_SECONDS per cell; etcd's
#      database size before and after deleting the log keys, compacting and defragmenting;
#      a catch-up read of one partition's log. Twice: through etcd's JSON gateway (the Python
#      probe) and through the cluster crate over gRPC (cluster/examples/append_bench.rs, which
#      also measures a takeover: lease expiry, the new owner's catch-up and first append).
# Knobs (environment): N (1000 sequential operations per etcd figure, N/5 transactions),
# TTL (2 s lease), KAFKA (127.0.0.1:9092), PARTS ("etcd etcd-log kafka kafka-install"),
# LOG_SIZES (4096,65536,524288), LOG_CONC (1,4,16), LOG_SECONDS (3).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-1000}
TTL=${TTL:-2}
KAFKA=${KAFKA:-127.0.0.1:9092}
PARTS=${PARTS:-etcd etcd-log kafka kafka-install}
LOG_SIZES=${LOG_SIZES:-4096,65536,524288}
LOG_CONC=${LOG_CONC:-1,4,16}
LOG_SECONDS=${LOG_SECONDS:-3}
PROBE="benches/cluster_primitives.py"
PY=/usr/bin/python3

need_debian() { # command package...
    local cmd=$1
    shift
    if ! command -v "$cmd" >/dev/null; then
        echo "== installing $* from Debian" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null ||
            { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; }
    fi
}

echo "== machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(date -u +%Y-%m-%dT%H:%MZ)"

ETCD_DIR=
ETCD_PIDS=()
cleanup() {
    for pid in "${ETCD_PIDS[@]}"; do kill -CONT "$pid" 2>/dev/null || true; kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "$ETCD_DIR" ]; then rm -rf "$ETCD_DIR"; fi
}
trap cleanup EXIT

start_etcd() { # sets ENDPOINTS and LEADER
    need_debian etcd etcd-server
    need_debian etcdctl etcd-client
    echo "== etcd: $(etcd --version | head -n 1), three members on loopback (heartbeat 100 ms, election timeout 1000 ms)"
    ETCD_DIR=$(mktemp -d)
    local cluster="e1=http://127.0.0.1:23801,e2=http://127.0.0.1:23802,e3=http://127.0.0.1:23803"
    local i
    for i in 1 2 3; do
        etcd --name "e$i" --data-dir "$ETCD_DIR/e$i" \
            --listen-client-urls "http://127.0.0.1:2379$i" --advertise-client-urls "http://127.0.0.1:2379$i" \
            --listen-peer-urls "http://127.0.0.1:2380$i" --initial-advertise-peer-urls "http://127.0.0.1:2380$i" \
            --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token "surge-bench-$$" \
            >"$ETCD_DIR/e$i.log" 2>&1 &
        ETCD_PIDS+=($!)
    done
    ENDPOINTS="127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793"
    for _ in $(seq 1 100); do
        if ETCDCTL_API=3 etcdctl --endpoints "$ENDPOINTS" endpoint health >/dev/null 2>&1; then break; fi
        sleep 0.1
    done
    ETCDCTL_API=3 etcdctl --endpoints "$ENDPOINTS" endpoint status -w table
    # The leader's endpoint: a write through a follower is forwarded (one more hop).
    LEADER=$(ETCDCTL_API=3 etcdctl --endpoints "$ENDPOINTS" endpoint status -w json |
        $PY -c 'import json,sys; print([s["Endpoint"] for s in json.load(sys.stdin) if s["Status"]["leader"] == s["Status"]["header"]["member_id"]][0])')
}

stop_etcd() {
    cleanup
    ETCD_PIDS=()
    ETCD_DIR=
}

run_etcd() {
    start_etcd
    local endpoints=$ENDPOINTS leader=$LEADER
    local follower
    follower=$(echo "$endpoints" | tr ',' '\n' | grep -v "$leader" | head -n 1)
    echo "-- through the leader ($leader)"
    $PY "$PROBE" etcd-latency "$leader" "$N"
    echo "-- through a follower ($follower)"
    $PY "$PROBE" etcd-latency "$follower" "$N"

    # Failover of ownership: the holder talks to one member, the contender to another.
    local other
    other=$(echo "$endpoints" | tr ',' '\n' | grep -v "$leader" | tail -n 1)
    local round holder t0
    for round in 1 2 3; do
        echo "-- SIGKILL of the holder, round $round (lease TTL ${TTL} s, keep-alive every TTL/4)"
        $PY "$PROBE" etcd-hold "$leader" "bench/partition-7" "$TTL" >"$ETCD_DIR/hold.out" &
        holder=$!
        for _ in $(seq 1 50); do grep -q held "$ETCD_DIR/hold.out" && break; sleep 0.1; done
        sleep "$(awk -v r="$round" 'BEGIN { print 0.3 + 0.2 * r }')"
        t0=$($PY -c 'import time; print(time.time())')
        kill -KILL "$holder"
        wait "$holder" 2>/dev/null || true
        $PY "$PROBE" etcd-take "$other" "bench/partition-7" "$TTL" "$t0" 30
    done
    for round in 1 2 3; do
        echo "-- SIGSTOP of the holder, round $round; SIGCONT once the other client owns the key"
        $PY "$PROBE" etcd-hold "$leader" "bench/partition-7" "$TTL" >"$ETCD_DIR/hold.out" &
        holder=$!
        for _ in $(seq 1 50); do grep -q held "$ETCD_DIR/hold.out" && break; sleep 0.1; done
        sleep "$(awk -v r="$round" 'BEGIN { print 0.3 + 0.2 * r }')"
        t0=$($PY -c 'import time; print(time.time())')
        kill -STOP "$holder"
        # the contender takes the key, then holds it (under its own lease) while the old
        # owner wakes up: the key is deleted by the contender only after printing
        $PY "$PROBE" etcd-take "$other" "bench/partition-7" "$TTL" "$t0" 30 keep
        kill -CONT "$holder"
        wait "$holder" 2>/dev/null || true
        sed 's/^/   holder: /' "$ETCD_DIR/hold.out"
        ETCDCTL_API=3 etcdctl --endpoints "$other" del bench/partition-7 >/dev/null
    done
    stop_etcd
}

# Option C: group commits as guarded txns on etcd keys, at realistic batch sizes and with
# several partitions writing at once; storage before and after truncation; catch-up reads.
run_etcd_log() {
    start_etcd
    echo "-- partition logs in etcd: payloads ${LOG_SIZES} bytes, ${LOG_CONC} partitions at once, ${LOG_SECONDS} s each"
    local others
    others=$(echo "$ENDPOINTS" | tr ',' '\n' | grep -v "$LEADER" | paste -sd,)
    echo "-- through etcd's JSON gateway (Python, one connection per partition, to the leader)"
    $PY "$PROBE" etcd-log "$LEADER,$others" "$LOG_SIZES" "$LOG_CONC" "$LOG_SECONDS"
    echo "-- through the cluster crate (gRPC, requests pinned to the first endpoint: the leader)"
    cargo build --release -q -p surge-cluster --example append_bench
    target/release/examples/append_bench "$LEADER,$others" "$LOG_SIZES" "$LOG_CONC" "$LOG_SECONDS"
    stop_etcd
}

kafka_python() {
    if $PY -c 'import confluent_kafka' 2>/dev/null &&
        timeout 20 $PY -c "
from confluent_kafka.admin import AdminClient
import sys
AdminClient({'bootstrap.servers': '$KAFKA', 'log_level': 0}).list_topics(timeout=8)" >/dev/null 2>&1; then
        echo "$PY"
        return
    fi
    local venv="$HOME/.cache/surge/kafka-probe-venv"
    if [ ! -x "$venv/bin/python" ]; then
        echo "== Debian's librdkafka does not talk to $KAFKA; a venv with PyPI's confluent-kafka" >&2
        $PY -c 'import ensurepip' 2>/dev/null || need_debian /nonexistent python3-venv
        $PY -m venv "$venv" >&2
        "$venv/bin/pip" install -q confluent-kafka >&2
    fi
    echo "$venv/bin/python"
}

run_kafka() {
    need_debian kcat kcat
    # (need_debian installs when its first argument is not a command: a module is not)
    $PY -c 'import confluent_kafka' 2>/dev/null || need_debian /nonexistent python3-confluent-kafka
    if ! (exec 3<>"/dev/tcp/${KAFKA%:*}/${KAFKA#*:}") 2>/dev/null; then
        scripts/services.sh kafka
    fi
    echo "== Kafka-protocol broker on $KAFKA: $(command -v tansu >/dev/null && tansu --version || echo 'not tansu?')"
    echo "-- kcat (Debian's librdkafka $(dpkg-query -W -f '${Version}' librdkafka1 2>/dev/null)) metadata:"
    timeout 15 kcat -L -b "$KAFKA" -m 5 2>&1 | grep -E '^(Metadata| *[0-9]+ brokers)|ApiVersionRequest failed' | head -n 2 |
        sed -e 's/^.*ApiVersionRequest failed: \([^(]*\).*/   ApiVersionRequest failed: \1/' || true
    local py
    py=$(kafka_python)
    echo "-- probe with $($py -c 'import confluent_kafka as c; v = c.version(); print("confluent-kafka", v[0] if isinstance(v, tuple) else v, "librdkafka", c.libversion()[0])')"
    timeout 180 "$py" "$PROBE" kafka "$KAFKA" "$N" 2>&1 | grep -v '^%' || echo "   (the Kafka probe failed or timed out)"
}

run_kafka_install() {
    echo "== could a three-broker Apache Kafka run here?"
    if command -v java >/dev/null; then
        echo "   JDK: $(java -version 2>&1 | head -n 1)"
    else
        echo "   JDK: $(apt-get install -s openjdk-17-jre-headless 2>/dev/null | grep -c '^Inst') packages to install for openjdk-17-jre-headless"
    fi
    echo "   Debian packages a Kafka broker: $(apt-cache search --names-only '^kafka$|^apache-kafka|^kafka-server' | wc -l) found"
    local code
    code=$(curl -s -m 10 -o /dev/null -w '%{http_code}' https://repo1.maven.org/maven2/ 2>/dev/null || true)
    echo "   Maven Central (org.apache.kafka:kafka_2.13): HTTP ${code:-none} (000: not reachable from this machine)"
}

for part in $PARTS; do
    case $part in
        etcd) run_etcd ;;
        etcd-log) run_etcd_log ;;
        kafka) run_kafka ;;
        kafka-install) run_kafka_install ;;
        *) echo "unknown part $part" >&2; exit 2 ;;
    esac
done
