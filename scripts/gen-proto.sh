#!/usr/bin/env bash
# Regenerates api/ratelimiterv1 from proto/ratelimiter/v1/ratelimiter.proto.
# Needs protoc (Debian: protobuf-compiler) and the Go plugins:
#   go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
#   go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1
# The generated code is committed: building the service needs none of this.
set -euo pipefail
cd "$(dirname "$0")/.."
protoc --proto_path=proto \
  --go_out=. --go_opt=module=github.com/distributedratelimiter/ratelimiter \
  --go-grpc_out=. --go-grpc_opt=module=github.com/distributedratelimiter/ratelimiter \
  ratelimiter/v1/ratelimiter.proto
