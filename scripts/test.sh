#!/usr/bin/env bash
# Runs every test of the project, on a fresh machine too: installs
# redis-server, promtool, chromium, nginx and caddy (Debian packages) when
# they are missing, then runs the Go suite with the race detector (real
# redis-server processes on loopback ports, started and stopped by the tests;
# the alert rules' unit tests under promtool; the live page in headless
# Chromium; nginx and Caddy in front of a backend), vets the benchmark
# module, tests the deployment files (deploy/, a module of its own), and
# runs the JavaScript package's tests.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-redis.sh
scripts/install-tools.sh

unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './clients/*'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:" $unformatted >&2
  exit 1
fi
go vet ./...
(cd bench && go vet ./...)
# deploy/ is a module of its own (the Kubernetes API types): its manifests
# decoded strictly, the container's arguments run through serve --dry-run,
# the Dockerfile's build checked static.
(cd deploy && go vet ./... && go test -count=1 ./...)
go test -race -count=1 -timeout 20m $(go list ./... | grep -v -e '/cmd/ratelimiter$' -e '/internal/chaostest$')
# The end-to-end and fault tests run real servers and proxies under the load
# the product is for (bursts of thousands of concurrent checks, an open loop
# of 3,000 checks a second, faults injected mid-flood): one package at a
# time, so that another package's tests do not take the two cores they are
# measured on.
go test -race -count=1 -timeout 20m -p 1 ./internal/chaostest ./cmd/ratelimiter
# The race detector changes allocation counts, so the zero-allocation
# assertions skip themselves under -race; run them once without it.
go test -count=1 -run 'Allocations|DoesNotAllocate' ./metrics/ ./service/ ./policy/
(cd clients/js && npm test --silent)
