package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"log/slog"

	"github.com/distributedratelimiter/ratelimiter/tlsfiles"
	"github.com/prometheus/client_golang/prometheus"
)

// tlsFlags are TLS of every listener (the API, the admin API, the reverse
// proxy, the native gRPC API, Envoy's RLS) and of the connection to Redis.
type tlsFlags struct {
	certFile, keyFile, clientCAFile string

	redis                                      bool
	redisCA, redisCert, redisKey, redisSNIName string
}

func (t *tlsFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&t.certFile, "tls-cert-file", "", "every listener: serve TLS with this PEM certificate `file` (chain), re-read when it changes; with --tls-key-file")
	fs.StringVar(&t.keyFile, "tls-key-file", "", "every listener: the PEM key `file` of --tls-cert-file, re-read when it changes")
	fs.StringVar(&t.clientCAFile, "tls-client-ca-file", "", "every listener: require a client certificate signed by this PEM authority `file` (mutual TLS); needs --tls-cert-file")
	fs.BoolVar(&t.redis, "redis-tls", false, "redis store: connect over TLS (to the server, the sentinels and the primaries they name, or every Cluster node), verifying the server against the system's roots or --redis-tls-ca-file; implied by any --redis-tls-* file flag")
	fs.StringVar(&t.redisCA, "redis-tls-ca-file", "", "redis store: the PEM authority `file` Redis's certificate must chain to (default: the system's roots)")
	fs.StringVar(&t.redisCert, "redis-tls-cert-file", "", "redis store: a client certificate `file` (PEM) for Redis servers that verify clients (tls-auth-clients), re-read when it changes; with --redis-tls-key-file")
	fs.StringVar(&t.redisKey, "redis-tls-key-file", "", "redis store: the PEM key `file` of --redis-tls-cert-file")
	fs.StringVar(&t.redisSNIName, "redis-tls-server-name", "", "redis store: the `name` Redis's certificate must carry (default: the host of each address dialed)")
}

// validate checks the flags' combinations; the files are read by
// listener and redisConfig.
func (t tlsFlags) validate() error {
	if (t.certFile == "") != (t.keyFile == "") {
		return errors.New("--tls-cert-file and --tls-key-file go together")
	}
	if t.clientCAFile != "" && t.certFile == "" {
		return errors.New("--tls-client-ca-file needs --tls-cert-file and --tls-key-file: client certificates are verified over TLS")
	}
	if (t.redisCert == "") != (t.redisKey == "") {
		return errors.New("--redis-tls-cert-file and --redis-tls-key-file go together")
	}
	return nil
}

// listener is the listeners' TLS material, or nil when they serve plain
// TCP. A rotation that does not load is logged; the last good certificate
// stays in use.
func (t tlsFlags) listener(log *slog.Logger) (*tlsfiles.Reloader, error) {
	if t.certFile == "" {
		return nil, nil
	}
	return tlsfiles.NewServer(tlsfiles.Files{CertFile: t.certFile, KeyFile: t.keyFile, CAFile: t.clientCAFile},
		tlsfiles.Options{OnError: func(err error) { log.Error("listeners' TLS certificate not reloaded", "err", err) }})
}

// redisOn reports whether the connection to Redis is TLS.
func (t tlsFlags) redisOn() bool {
	return t.redis || t.redisCA != "" || t.redisCert != "" || t.redisSNIName != ""
}

// redisConfig is the TLS of the connection to Redis, or nil for plain
// TCP.
func (t tlsFlags) redisConfig(log *slog.Logger) (*tls.Config, error) {
	if !t.redisOn() {
		return nil, nil
	}
	r, err := tlsfiles.NewClient(tlsfiles.Files{CAFile: t.redisCA, CertFile: t.redisCert, KeyFile: t.redisKey},
		tlsfiles.Options{OnError: func(err error) { log.Error("redis client certificate not reloaded", "err", err) }})
	if err != nil {
		return nil, err
	}
	return r.ClientConfig(t.redisSNIName), nil
}

// alpn is what a listener offers in ALPN: gRPC speaks HTTP/2 only.
func alpn(name string) []string {
	if name == "grpc" || name == "rls" {
		return []string{"h2"}
	}
	return []string{"h2", "http/1.1"}
}

// certificateExpiry exports when the listeners' certificate in use
// expires, for an alert well before it does (rotation that stopped).
func certificateExpiry(r *tlsfiles.Reloader) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "ratelimiter_tls_certificate_expiry_timestamp_seconds",
		Help: "When the listeners' TLS certificate in use expires (Unix seconds); it is re-read when its files change.",
	}, func() float64 { return float64(r.Certificate().Leaf.NotAfter.Unix()) })
}
