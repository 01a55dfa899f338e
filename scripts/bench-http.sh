#!/usr/bin/env bash
# Measures HTTP /v1/check throughput and latency on the memory store with wrk on
# the same machine (loopback). Starts the server, runs wrk, stops the server by
# its PID.
#
#   scripts/bench-http.sh [connections] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
conns=${1:-16}
secs=${2:-10}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
work=$(mktemp -d)
go build -o "$work/ratelimiter" ./cmd/ratelimiter
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$work/ratelimiter" serve --config bench/http/config.yaml --listen "127.0.0.1:$port" --log-level warn &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
until curl -fs "http://127.0.0.1:$port/readyz" >/dev/null; do sleep 0.1; done
wrk -t1 -c"$conns" -d"${secs}s" --latency -s bench/http/check.lua "http://127.0.0.1:$port"
