package redisstore

import (
	"context"
	"crypto/tls"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/internal/redistest"
	"github.com/distributedratelimiter/ratelimiter/internal/tlstest"
	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/store"
	"github.com/distributedratelimiter/ratelimiter/store/storetest"
	"github.com/distributedratelimiter/ratelimiter/tlsfiles"
)

// tlsMaterial is the test's key material: the servers' (redistest.WithTLS)
// and the client's configuration (the authority, a client certificate).
func tlsMaterial(t *testing.T) (*tlstest.Files, redistest.Option, *tls.Config) {
	t.Helper()
	m := tlstest.New(t)
	r, err := tlsfiles.NewClient(tlsfiles.Files{CAFile: m.CAFile, CertFile: m.Client.CertFile, KeyFile: m.Client.KeyFile}, tlsfiles.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return m, redistest.WithTLS(redistest.TLS{CertFile: m.Server.CertFile, KeyFile: m.Server.KeyFile, CAFile: m.CAFile}), r.ClientConfig("")
}

// The conformance suite, every connection over TLS with a client
// certificate, in each mode: the servers' TLS ports only (a Cluster's
// nodes found through CLUSTER SHARDS' tls-port, a Sentinel's primary at the
// TLS address the sentinels monitor).
func TestConformanceTLSStandalone(t *testing.T) {
	_, with, cfg := tlsMaterial(t)
	srv := redistest.Standalone(t, with, redistest.WithArgs("--tls-auth-clients", "yes"))
	storetest.Run(t, newStore(t, Options{Addrs: []string{srv.TLSAddr()}, TLS: cfg}))
}

func TestConformanceTLSCluster(t *testing.T) {
	_, with, cfg := tlsMaterial(t)
	c := redistest.Cluster(t, 3, 0, with)
	var addrs []string
	for _, n := range c.Nodes() {
		addrs = append(addrs, n.TLSAddr())
	}
	storetest.Run(t, newStore(t, Options{Addrs: addrs[:1], Mode: Cluster, TLS: cfg}))
}

func TestConformanceTLSSentinel(t *testing.T) {
	_, with, cfg := tlsMaterial(t)
	s := redistest.Sentinel(t, "tls-primary", with)
	storetest.Run(t, newStore(t, Options{Addrs: s.SentinelTLSAddrs(), Mode: Sentinel, MasterName: "tls-primary", TLS: cfg}))
}

// A server whose certificate another authority signed, one whose
// certificate expired, and one that requires a client certificate the
// client does not have: each refused with an error that says why, never a
// plain-text fallback.
func TestTLSErrors(t *testing.T) {
	m, with, good := tlsMaterial(t)
	srv := redistest.Standalone(t, with, redistest.WithArgs("--tls-auth-clients", "yes"))
	expired := redistest.Standalone(t, redistest.WithTLS(redistest.TLS{CertFile: m.Expired.CertFile, KeyFile: m.Expired.KeyFile, CAFile: m.CAFile}))
	wrongCA, err := tlsfiles.NewClient(tlsfiles.Files{CAFile: m.OtherCAFile, CertFile: m.Client.CertFile, KeyFile: m.Client.KeyFile}, tlsfiles.Options{})
	if err != nil {
		t.Fatal(err)
	}
	noCert, err := tlsfiles.NewClient(tlsfiles.Files{CAFile: m.CAFile}, tlsfiles.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, addr string
		cfg        *tls.Config
		want       string // one of, separated by |
	}{
		{"wrong authority", srv.TLSAddr(), wrongCA.ClientConfig(""), "certificate signed by unknown authority"},
		{"expired", expired.TLSAddr(), good, "expired"},
		// TLS 1.3: the client's handshake ends before the server checks
		// its certificate, so the refusal may come as a reset.
		{"no client certificate", srv.TLSAddr(), noCert.ClientConfig(""), "certificate required|connection reset"},
		{"plain text to a TLS port", srv.TLSAddr(), nil, "unavailable"},
		// Redis reads the ClientHello as a command and waits for its end.
		{"TLS to a plain port", srv.Addr(), good, "first record does not look like a TLS handshake|deadline exceeded"},
	} {
		_, err := New(Options{Addrs: []string{c.addr}, TLS: c.cfg, Timeout: 2 * time.Second})
		// A certificate that does not verify is a deployment error, not
		// Redis away: no retrying in the background.
		if verifies := !strings.Contains(c.want, "authority") && c.want != "expired"; err != nil && errors.Is(err, store.ErrUnavailable) != verifies {
			t.Errorf("%s: %v: unavailable %v, want %v", c.name, err, errors.Is(err, store.ErrUnavailable), verifies)
		}
		if err == nil || !slices.ContainsFunc(strings.Split(c.want, "|"), func(w string) bool { return strings.Contains(err.Error(), w) }) {
			t.Errorf("%s: %v, want an error containing %q", c.name, err, c.want)
		}
	}
	// The server name: the certificate's (localhost) verifies, another
	// does not, though the address is the same.
	named, err := tlsfiles.NewClient(tlsfiles.Files{CAFile: m.CAFile, CertFile: m.Client.CertFile, KeyFile: m.Client.KeyFile}, tlsfiles.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if s, err := New(Options{Addrs: []string{srv.TLSAddr()}, TLS: named.ClientConfig("localhost")}); err != nil {
		t.Errorf("server name localhost: %v", err)
	} else {
		s.Close()
	}
	if _, err := New(Options{Addrs: []string{srv.TLSAddr()}, TLS: named.ClientConfig("redis.example.com"), Timeout: 2 * time.Second}); err == nil ||
		!strings.Contains(err.Error(), "redis.example.com") || errors.Is(err, store.ErrUnavailable) {
		t.Errorf("server name redis.example.com: %v, want a certificate error naming it, not retried", err)
	}
	// And the right material works on the same server.
	s, err := New(Options{Addrs: []string{srv.TLSAddr()}, TLS: good})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r, err := limit.Rule{Name: "r", Algorithm: limit.TokenBucket, Limit: 5, Period: time.Hour}.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	var admitted int
	for range 8 {
		v, err := s.Apply(context.Background(), store.Request{Key: "tls-user", Rules: []limit.Rule{r}, Cost: 1})
		if err != nil {
			t.Fatal(err)
		}
		if v.Allowed {
			admitted++
		}
	}
	if admitted != 5 {
		t.Errorf("admitted %d of 8 over TLS, want 5", admitted)
	}
}
