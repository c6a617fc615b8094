#!/usr/bin/env bash
# A real Milvus server for the opt-in tests of the milvus backend (make test-milvus).
#
#   scripts/milvus-server.sh start|stop|status DATA_DIR
#
# It runs the standalone server that the PyPI package `milvus` (2.3.5) embeds, offline,
# with its data, config and logs under DATA_DIR, and answers at
# http://127.0.0.1:$MILVUS_PORT (default 19530). Every component advertises 127.0.0.1,
# and the embedded etcd listens on loopback only; Milvus 2.3's own gRPC and metrics ports
# bind every interface whatever its config says, so on a shared network firewall them
# or use Milvus Lite (the default backend) instead.
#
# `start` returns once the server answers (at most MILVUS_START_TIMEOUT s, default 180);
# `stop` sends SIGTERM to the server's process group, waits up to 30 s for a clean
# shutdown, then SIGKILLs what is left.
set -euo pipefail

usage() { echo "usage: $0 start|stop|status DATA_DIR" >&2; exit 2; }
[[ $# -eq 2 ]] || usage
command=$1
data=$(mkdir -p "$2" && cd "$2" && pwd)
port=${MILVUS_PORT:-19530}
start_timeout=${MILVUS_START_TIMEOUT:-180}
server=${MILVUS_SERVER:-$(dirname "$0")/../.venv/bin/milvus-server}
pidfile=$data/milvus-server.pid
log=$data/milvus-server.log

running() { [[ -f $pidfile ]] && kill -0 -- "-$(cat "$pidfile")" 2>/dev/null; }

start() {
    if running; then
        echo "Milvus is already running (pid $(cat "$pidfile")) at http://127.0.0.1:$port"
        return
    fi
    if [[ ! -x $server ]]; then
        echo "$server is missing: .venv/bin/pip install milvus==2.3.5" >&2
        exit 1
    fi
    local loopback=()
    for component in rootCoord proxy queryCoord queryNode indexNode dataCoord dataNode; do
        loopback+=(--extra-config "$component.ip=127.0.0.1")
    done
    # setsid: the server gets its own process group, which `stop` signals as a whole.
    PYTHONUNBUFFERED=1 setsid "$server" --data "$data" --proxy-port "$port" "${loopback[@]}" \
        >"$log" 2>&1 </dev/null &
    echo $! >"$pidfile"
    local waited=0
    until grep -q "Welcome to use Milvus" "$log" 2>/dev/null; do
        if ! running || grep -q -e "already stopped" -e "timeout" "$log" 2>/dev/null \
            || ((waited >= start_timeout)); then
            echo "Milvus did not start within ${waited} s; its log: $log" >&2
            tail -n 20 "$log" >&2
            stop
            exit 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
    echo "Milvus is running (pid $(cat "$pidfile")) at http://127.0.0.1:$port, after ${waited} s"
}

stop() {
    if ! running; then
        echo "Milvus is not running"
        rm -f "$pidfile"
        return
    fi
    local group
    group=$(cat "$pidfile")
    kill -TERM -- "-$group" 2>/dev/null || true
    for _ in $(seq 30); do
        if ! kill -0 -- "-$group" 2>/dev/null; then
            rm -f "$pidfile"
            echo "Milvus stopped"
            return
        fi
        sleep 1
    done
    kill -KILL -- "-$group" 2>/dev/null || true
    rm -f "$pidfile"
    echo "Milvus did not stop within 30 s and was killed"
}

case $command in
    start) start ;;
    stop) stop ;;
    status)
        if running; then
            echo "Milvus is running (pid $(cat "$pidfile")) at http://127.0.0.1:$port"
        else
            echo "Milvus is not running"
            exit 3
        fi
        ;;
    *) usage ;;
esac
