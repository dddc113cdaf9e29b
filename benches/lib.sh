# Helpers the newer bench scripts share (sourced, not run): pinning, CPU time of a process,
# steal time, waiting for a URL.

# `taskset -c CPUS` when there are two CPUs or more (taskset execs the program, so $! of a
# background start is the program itself).
pin() {
    local cpus=$1
    shift
    if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
        exec taskset -c "$cpus" "$@"
    else
        exec "$@"
    fi
}

# Waits up to 10 s for a 2xx from the URL; exits the script without one.
wait_for() {
    for _ in $(seq 1 100); do
        if curl -sf "$1" >/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "no answer from $1" >&2
    exit 1
}

# CPU time (user + system, all threads) a process has used, in clock ticks.
cpu_ticks() {
    awk '{print $14 + $15}' "/proc/$1/stat"
}
TICK_HZ=$(getconf CLK_TCK)

# Steal: time the hypervisor gave our virtual CPUs to someone else; on a shared VM it comes
# in bursts of milliseconds.
cpu_list() { # "0-1,3" -> one CPU number per line
    local part
    for part in ${1//,/ }; do
        if [[ $part == *-* ]]; then seq "${part%-*}" "${part#*-}"; else echo "$part"; fi
    done
}
steal_sample() { # CPUS -> "steal_ticks all_ticks", summed over those CPUs
    local names
    names=$(cpu_list "$1" | sed 's/^/cpu/' | paste -sd'|')
    awk -v re="^($names)\$" '$1 ~ re { s += $9; for (i = 2; i <= 9; i++) t += $i } END { print s + 0, t + 0 }' /proc/stat
}
steal_percent() { # "before" "after" samples -> percent of those CPUs' time
    echo "$1 $2" | awk '{ d = $4 - $2; printf "%.1f", (d > 0 ? 100 * ($3 - $1) / d : 0) }'
}

# Stops every process in the array PIDS and waits for each (for the scripts' EXIT traps).
stop_pids() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}

# Exits 2 unless every tool named is on PATH.
need_tools() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 2; }
    done
}

# Leaves BIN alone when it is set (prebuilt binaries); else builds the packages cargo's
# arguments name, release, and points BIN at them.
release_bin() {
    if [ -z "${BIN:-}" ]; then
        echo "== building (release)"
        cargo build --release --locked "$@"
        BIN="${CARGO_TARGET_DIR:-target}/release"
    fi
}

# DATA, a temporary directory, and PIDS, the processes the script starts: when the script
# exits, the processes are stopped and the directory removed.
scratch() {
    DATA=$(mktemp -d)
    PIDS=()
    trap 'stop_pids; rm -rf "$DATA"' EXIT
}
