#!/usr/bin/env bash
# Compares the check path on the Redis store (HTTP /v1/check -> service ->
# Redis) of two builds side by side in one run: this working tree ("new") and
# a git revision ("old"). One redis-server on a free loopback port serves
# both; each round runs one build at a time as `serve --store redis` with its
# default flags and drives it with wrk (10,000 subjects, a limit never
# reached, so every check is a full Redis round trip), alternating old and
# new. Prints checks/s and p99 per round. Everything it starts is stopped by
# its PID.
#
#   scripts/bench-store-path.sh [old-revision] [rounds] [connections] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
old=${1:-7dc175e}
rounds=${2:-3}
conns=${3:-64}
secs=${4:-10}
scripts/install-redis.sh
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  git worktree remove --force "$work/old-src" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

go build -o "$work/new" ./cmd/ratelimiter
git worktree add --detach "$work/old-src" "$old" >/dev/null 2>&1
(cd "$work/old-src" && go build -o "$work/old" ./cmd/ratelimiter)

freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rport=$(freeport)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --daemonize no --logfile "$work/redis.log" &
pids+=($!)
until redis-cli -p "$rport" ping >/dev/null 2>&1; do sleep 0.1; done

run() { # build label
  local port pid
  port=$(freeport)
  "$work/$1" serve --config bench/http/config.yaml --listen "127.0.0.1:$port" --store redis \
    --redis-addrs "127.0.0.1:$rport" --log-level warn &
  pid=$!
  until curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; do sleep 0.1; done
  local out
  out=$(wrk -t2 -c"$conns" -d"${secs}s" --latency -s bench/http/check.lua "http://127.0.0.1:$port")
  local rps p99 non2xx
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $5}' <<<"$out")
  local decided
  decided=$(curl -fs "http://127.0.0.1:$port/metrics" | grep '^ratelimiter_decided_by_total' |
    sed -E 's/.*decided_by="([a-z-]+)".* ([0-9.e+]+)$/\1 \2/' |
    awk '{s[$1]+=$2} END {for (b in s) if (s[b]>0) printf "%s=%d ", b, s[b]}')
  kill "$pid"; wait "$pid" 2>/dev/null || true
  printf '%-4s round %d: %10s checks/s  p99 %8s  non-2xx %s  decided by: %s\n' "$1" "$2" "$rps" "$p99" "${non2xx:-0}" "$decided"
}

echo "old = $old ($(git log -1 --format='%h %s' "$old" | cut -c1-60)), new = working tree; $conns connections, ${secs}s per run"
for r in $(seq 1 "$rounds"); do
  run old "$r"
  run new "$r"
done
