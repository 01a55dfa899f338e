#!/usr/bin/env bash
# Measures this service beside its peers, in one run on this machine
# (bench/peers): Gubernator v2.13.0 (single node, its gRPC client) beside
# the memory store, and envoyproxy/ratelimit beside the Redis store (deny
# cache off), both over Envoy's protocol with the same configuration file
# and 10,000 keys. Prints each run and the ratios of each round, with each
# server's CPU time per check.
#
#   scripts/bench-peers.sh                  # 3 rounds of 5 s runs, 64 callers
#   scripts/bench-peers.sh --rounds 5 --duration 10s
#
# Installs the pinned peers into bench/bin with `go install` (from the Go
# module proxy) and redis-server when missing. Everything listens on
# loopback and is stopped by its PID at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

GUBERNATOR=github.com/gubernator-io/gubernator/v2/cmd/gubernator@v2.13.0
# envoyproxy/ratelimit tags no Go module releases: main of 2026-01-22.
ENVOY_RATELIMIT=github.com/envoyproxy/ratelimit/src/service_cmd@v1.4.1-0.20260122083618-3fb702589d36

scripts/install-redis.sh
mkdir -p bench/bin
bin="$PWD/bench/bin"
install() { # install BINARY PACKAGE@VERSION, unless that version is there
  local want="${2#*@}"
  if ! go version -m "$bin/$1" 2>/dev/null | grep -q "mod.*$want"; then
    echo "installing $2" >&2
    GOBIN="$bin" go install "$2"
  fi
}
install gubernator "$GUBERNATOR"
install service_cmd "$ENVOY_RATELIMIT"
go build -o "$bin/ratelimiter" ./cmd/ratelimiter
(cd bench && go build -o "$bin/peers" ./peers)
"$bin/peers" --bin "$bin" --ratelimiter "$bin/ratelimiter" "$@"
