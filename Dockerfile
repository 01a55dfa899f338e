# The ratelimiter image: one static binary on a distroless base, run as a
# non-root user, with no shell and no package manager in it.
#
#   docker build -t ratelimiter .
#   docker run --rm -p 8080:8080 ratelimiter            # memory store, example policy
#   docker run --rm ratelimiter serve --dry-run --config /etc/ratelimiter/config.yaml ...
#
# deploy/kubernetes runs it; deploy/kubernetes's test builds the binary
# with the build command below and checks that it is static.

ARG GO_VERSION=1.26.8

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
# Modules first: a change to the code alone reuses this layer.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Static (no cgo, no libc), reproducible paths, symbols stripped.
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/ratelimiter ./cmd/ratelimiter

# distroless/static: CA certificates, tzdata and /etc/passwd with the
# nonroot user (65532); nothing else.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ratelimiter /ratelimiter
USER 65532:65532
# 8080 the HTTP API, /metrics, /healthz, /readyz; 8081 the native gRPC API;
# 8082 Envoy's rate limit service; 9090 the admin API (when enabled).
EXPOSE 8080 8081 8082 9090
ENTRYPOINT ["/ratelimiter"]
CMD ["serve", "--listen", ":8080"]
