#!/usr/bin/env bash
# Starts a local distributed deployment: a 3-primary Redis Cluster on
# 127.0.0.1:7001-7003 and three ratelimiter instances on 127.0.0.1:8081-8083
# sharing it, all on loopback. Ctrl-C stops everything this script started
# (by PID) and removes its temporary directory.
#
#   scripts/run-distributed.sh [config.yaml]
#
# Environment: REDIS_BASE_PORT (7001), HTTP_BASE_PORT (8081),
# RATELIMITER_ADMIN_TOKEN (the admin API's bearer token; a random one is made
# and printed when unset). docs/CONFIGURATION.md walks through changing a
# user's limit live on this deployment.
set -euo pipefail
cd "$(dirname "$0")/.."

config=${1:-deploy/example.yaml}
redis_base=${REDIS_BASE_PORT:-7001}
http_base=${HTTP_BASE_PORT:-8081}
work=$(mktemp -d)
pids=()

cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

scripts/install-redis.sh
go build -o "$work/ratelimiter" ./cmd/ratelimiter

addrs=()
for i in 0 1 2; do
  port=$((redis_base + i))
  mkdir -p "$work/redis-$port"
  redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
    --cluster-config-file "$work/redis-$port/nodes.conf" --cluster-node-timeout 2000 \
    --dir "$work/redis-$port" --save "" --appendonly no --daemonize no \
    --logfile "$work/redis-$port/redis.log" &
  pids+=($!)
  addrs+=("127.0.0.1:$port")
done
for a in "${addrs[@]}"; do
  until redis-cli -h "${a%:*}" -p "${a#*:}" ping >/dev/null 2>&1; do sleep 0.1; done
done
redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes >/dev/null
until redis-cli -p "$redis_base" cluster info | grep -q 'cluster_state:ok'; do sleep 0.2; done
echo "redis cluster: ${addrs[*]}"

if [ -z "${RATELIMITER_ADMIN_TOKEN:-}" ]; then
  RATELIMITER_ADMIN_TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
fi
export RATELIMITER_ADMIN_TOKEN

joined=$(IFS=,; echo "${addrs[*]}")
for i in 0 1 2; do
  port=$((http_base + i))
  "$work/ratelimiter" serve --config "$config" --listen "127.0.0.1:$port" \
    --store redis --redis-mode cluster --redis-addrs "$joined" &
  pids+=($!)
done
for i in 0 1 2; do
  until curl -fs "http://127.0.0.1:$((http_base + i))/readyz" >/dev/null; do sleep 0.1; done
done

cat <<MSG
three instances share the cluster: http://127.0.0.1:$http_base .. http://127.0.0.1:$((http_base + 2))
try:
  for p in $http_base $((http_base + 1)) $((http_base + 2)); do
    curl -s -X POST localhost:\$p/v1/check -d '{"namespace":"orders","subject":"user-42"}'; echo
  done
admin API token: $RATELIMITER_ADMIN_TOKEN
  curl -s -X PUT localhost:$http_base/v1/admin/overrides/orders/user-42 \\
    -H "Authorization: Bearer $RATELIMITER_ADMIN_TOKEN" -d '{"limits":{"per-minute":{"limit":1000,"burst":200}},"ttl":"1h"}'
Ctrl-C stops everything.
MSG
wait
