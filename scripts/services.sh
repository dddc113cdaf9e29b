#!/usr/bin/env bash
# Installs (if missing) and starts the servers the relay's tests talk to, on loopback:
#   MariaDB (Debian's mariadb-server) on 127.0.0.1:3306, root without password over TCP,
#   tansu (a Kafka-protocol broker, from crates.io) on 127.0.0.1:9092, in memory;
# and installs promtool (Debian's prometheus package), which the monitoring tests run on
# the alert rules and the dashboard (api/tests/monitoring.rs).
# Idempotent: what is installed is reused, what already answers is left alone.
#   scripts/services.sh          install and start both, install promtool
#   scripts/services.sh promtool install promtool only
#   scripts/services.sh stop     stop what this script started
set -euo pipefail

LOG_DIR=${SURGE_SERVICES_LOG_DIR:-/tmp/surge-services}
TANSU_VERSION=${TANSU_VERSION:-}   # empty: the newest on crates.io, pinned by --locked deps
mkdir -p "$LOG_DIR"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

wait_for() { # name, seconds, command...
    local name=$1 seconds=$2
    shift 2
    for _ in $(seq 1 $((seconds * 5))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    echo "services: $name did not come up within ${seconds}s; see $LOG_DIR" >&2
    return 1
}

start_mariadb() {
    if ! command -v mariadbd >/dev/null && [ ! -x /usr/sbin/mariadbd ]; then
        echo "services: installing mariadb-server from Debian" >&2
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q mariadb-server
    fi
    if ! mariadb-admin ping >/dev/null 2>&1 && ! port_open 3306; then
        as_root mkdir -p /run/mysqld
        as_root chown mysql:mysql /run/mysqld
        if [ ! -d /var/lib/mysql/mysql ]; then
            as_root mariadb-install-db --user=mysql --datadir=/var/lib/mysql >"$LOG_DIR/mariadb-install.log" 2>&1
        fi
        as_root sh -c "nohup /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 --port=3306 \
            --max-connections=500 >'$LOG_DIR/mariadb.log' 2>&1 &"
        wait_for mariadb 60 mariadb-admin ping
    fi
    # Tests log in as root over TCP without a password (unix_socket stays for local admin).
    if ! mariadb -h 127.0.0.1 -P 3306 -u root -e 'SELECT 1' >/dev/null 2>&1; then
        as_root mariadb -e "ALTER USER root@localhost IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket; FLUSH PRIVILEGES;"
    fi
    mariadb -h 127.0.0.1 -P 3306 -u root -e 'SELECT 1' >/dev/null
    echo "services: MariaDB answers on 127.0.0.1:3306" >&2
}

tansu_bin() {
    if command -v tansu >/dev/null; then command -v tansu; else echo "${CARGO_HOME:-$HOME/.cargo}/bin/tansu"; fi
}

start_tansu() {
    local bin
    bin=$(tansu_bin)
    if [ ! -x "$bin" ]; then
        echo "services: building tansu from crates.io (about 14 minutes the first time)" >&2
        cargo install tansu --locked --no-default-features --features dynostore ${TANSU_VERSION:+--version "$TANSU_VERSION"}
    fi
    if ! port_open 9092; then
        nohup "$bin" broker --listener-url tcp://127.0.0.1:9092 --advertised-listener-url tcp://127.0.0.1:9092 \
            --storage-engine memory://tansu/ >"$LOG_DIR/tansu.log" 2>&1 &
        echo $! >"$LOG_DIR/tansu.pid"
        wait_for tansu 30 port_open 9092
    fi
    echo "services: Kafka-protocol broker (tansu) answers on 127.0.0.1:9092" >&2
}

install_promtool() {
    if ! command -v promtool >/dev/null; then
        echo "services: installing promtool from Debian's prometheus package" >&2
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus
    fi
    # Fails the script (set -e) when the install did not bring promtool.
    echo "services: $(promtool --version 2>&1 | head -n 1)" >&2
}

stop_all() {
    if [ -f "$LOG_DIR/tansu.pid" ]; then kill "$(cat "$LOG_DIR/tansu.pid")" 2>/dev/null || true; rm -f "$LOG_DIR/tansu.pid"; fi
    mariadb-admin -u root shutdown 2>/dev/null || as_root mariadb-admin shutdown 2>/dev/null || true
}

case "${1:-start}" in
    start) start_mariadb; start_tansu; install_promtool ;;
    mariadb) start_mariadb ;;
    kafka) start_tansu ;;
    promtool) install_promtool ;;
    stop) stop_all ;;
    *) echo "usage: $0 [start|mariadb|kafka|promtool|stop]" >&2; exit 2 ;;
esac
