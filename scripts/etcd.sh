#!/usr/bin/env bash
# A three-member etcd on loopback for the cluster and partition crates' tests
# (cluster/tests/, partition/tests/).
# Installs what is missing from Debian: etcd-server, etcd-client (etcdctl), protobuf-compiler
# and libprotobuf-dev (protoc and the well-known types, which the etcd-client crate's build
# script needs).
# Idempotent: members that answer are left alone, a member that is down is started again on
# its data directory, so a test may kill one member and call this script to bring it back.
#   scripts/etcd.sh              install, start the three members, wait until all are healthy
#   scripts/etcd.sh install      install only
#   scripts/etcd.sh endpoints    print the client endpoints (comma-separated)
#   scripts/etcd.sh kill N       SIGKILL member N (1-3)
#   scripts/etcd.sh stop         stop the three members, keep their data
#   scripts/etcd.sh reset        stop them and delete their data
# Ports: clients on 127.0.0.1:22379, :22479, :22579, peers on :22380, :22480, :22580, away
# from etcd's defaults (2379/2380), which another etcd on the machine may use.
# Data and logs: $SURGE_ETCD_DIR (default: surge-etcd under the temp directory).
set -euo pipefail

DIR=${SURGE_ETCD_DIR:-${TMPDIR:-/tmp}/surge-etcd}
MEMBERS=(1 2 3)
client_port() { echo $((22279 + 100 * $1)); }
peer_port() { echo $((22280 + 100 * $1)); }
ENDPOINTS=$(for i in "${MEMBERS[@]}"; do printf '127.0.0.1:%s,' "$(client_port "$i")"; done | sed 's/,$//')

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install() {
    local missing=()
    command -v etcd >/dev/null || missing+=(etcd-server)
    command -v etcdctl >/dev/null || missing+=(etcd-client)
    command -v protoc >/dev/null || missing+=(protobuf-compiler)
    # protoc's well-known types (google/protobuf/*.proto), which etcd's protos import.
    [ -f /usr/include/google/protobuf/descriptor.proto ] || missing+=(libprotobuf-dev)
    if [ ${#missing[@]} -gt 0 ]; then
        echo "etcd.sh: installing ${missing[*]} from Debian" >&2
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    fi
    # Fails the script (set -e) when an install did not bring the command.
    echo "etcd.sh: $(etcd --version | head -n 1), $(protoc --version)" >&2
}

member_alive() { # N: the member's process is running
    local pid_file="$DIR/e$1.pid"
    [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null
}

start_member() { # N
    local i=$1 cluster="" j
    for j in "${MEMBERS[@]}"; do cluster+="e$j=http://127.0.0.1:$(peer_port "$j"),"; done
    local state=new
    # A member that ran before rejoins with its data; "new" is only for the first start.
    if [ -d "$DIR/e$i/member" ]; then state=existing; fi
    mkdir -p "$DIR"
    # Heartbeat 100 ms and election timeout 1000 ms (the defaults): a lost leader is replaced
    # in about a second, which the member-kill test rides through.
    nohup etcd --name "e$i" --data-dir "$DIR/e$i" \
        --listen-client-urls "http://127.0.0.1:$(client_port "$i")" \
        --advertise-client-urls "http://127.0.0.1:$(client_port "$i")" \
        --listen-peer-urls "http://127.0.0.1:$(peer_port "$i")" \
        --initial-advertise-peer-urls "http://127.0.0.1:$(peer_port "$i")" \
        --initial-cluster "${cluster%,}" --initial-cluster-state "$state" \
        --initial-cluster-token surge-test \
        >>"$DIR/e$i.log" 2>&1 &
    echo $! >"$DIR/e$i.pid"
}

healthy() {
    ETCDCTL_API=3 etcdctl --endpoints "$ENDPOINTS" --dial-timeout 1s --command-timeout 2s \
        endpoint health >/dev/null 2>&1
}

start() {
    install
    local i
    for i in "${MEMBERS[@]}"; do
        if ! member_alive "$i"; then start_member "$i"; fi
    done
    # Bounded wait: 60 s covers a cold start on a busy two-CPU machine. A deadline, not a
    # count of tries: one health check may itself take seconds while a member is down.
    local deadline=$((SECONDS + 60))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if healthy; then
            echo "etcd.sh: three members healthy on $ENDPOINTS (data in $DIR)" >&2
            return 0
        fi
        sleep 0.2
    done
    echo "etcd.sh: the members did not become healthy within 60 s; logs in $DIR" >&2
    tail -n 20 "$DIR"/e*.log >&2 || true
    return 1
}

wait_exit() { # PID SECONDS: waits for the process to end, then SIGKILLs it
    local pid=$1 seconds=$2
    for _ in $(seq 1 $((seconds * 10))); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

kill_member() { # N
    local i=$1 pid
    if member_alive "$i"; then
        pid=$(cat "$DIR/e$i.pid")
        kill -KILL "$pid"
        # Until it is gone its ports are taken: a restart right after would fail to bind.
        wait_exit "$pid" 5
    fi
    rm -f "$DIR/e$i.pid"
}

stop() {
    local i pids=()
    for i in "${MEMBERS[@]}"; do
        if member_alive "$i"; then
            pids+=("$(cat "$DIR/e$i.pid")")
            kill "${pids[-1]}"
        fi
        rm -f "$DIR/e$i.pid"
    done
    # A member left without its peers keeps campaigning for a while before it exits.
    for pid in "${pids[@]}"; do wait_exit "$pid" 10; done
}

case "${1:-start}" in
    start) start ;;
    install) install ;;
    endpoints) echo "$ENDPOINTS" ;;
    kill) kill_member "${2:?member number 1-3}" ;;
    stop) stop ;;
    reset) stop; sleep 0.5; rm -rf "$DIR" ;;
    *) echo "usage: $0 [start|install|endpoints|kill N|stop|reset]" >&2; exit 2 ;;
esac
