package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	pb "github.com/distributedratelimiter/ratelimiter/api/ratelimiterv1"
	"github.com/distributedratelimiter/ratelimiter/internal/redistest"
	"github.com/distributedratelimiter/ratelimiter/internal/tlstest"
	"github.com/distributedratelimiter/ratelimiter/tlsfiles"

	ratelimitcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
)

// TLS end to end: Redis over TLS with a client certificate (the server
// requires one), and every listener (the API, the admin API, the native
// gRPC API, Envoy's RLS) serving TLS with client certificates required.
// Real handshakes: a client with the authority and a certificate gets
// through on each; a client trusting another authority, one without a
// certificate, and the listeners served an expired certificate each get
// the error that says so; a rotated certificate is served from the next
// handshake, without a restart.
func TestTLSEverywhere(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the server and redis-server")
	}
	m := tlstest.New(t)
	rds := redistest.Standalone(t, redistest.WithTLS(redistest.TLS{CertFile: m.Server.CertFile, KeyFile: m.Server.KeyFile, CAFile: m.CAFile}),
		redistest.WithArgs("--tls-auth-clients", "yes"))
	// The listeners' own copy of the server pair, rotated below.
	dir := t.TempDir()
	listenPair := tlstest.Pair{CertFile: filepath.Join(dir, "tls-cert.pem"), KeyFile: filepath.Join(dir, "tls-key.pem")}
	copyFile(t, m.Server.CertFile, listenPair.CertFile)
	copyFile(t, m.Server.KeyFile, listenPair.KeyFile)
	token := "tls-admin-token-0123456789"
	cfg := writeConfig(t, "namespaces:\n  - name: orders\n    limits:\n      - {name: per-hour, algorithm: token_bucket, limit: 100, period: 1h}\n")
	// The Redis authority and server name as environment variables, the
	// rest as flags: both work.
	s := startServerEnv(t, buildBinary(t), []string{"RATELIMITER_ADMIN_TOKEN=" + token,
		"RATELIMITER_REDIS_TLS_CA_FILE=" + m.CAFile, "RATELIMITER_REDIS_TLS_SERVER_NAME=localhost"}, "--config", cfg,
		"--store", "redis", "--redis-addrs", rds.TLSAddr(),
		"--redis-tls-cert-file", m.Client.CertFile, "--redis-tls-key-file", m.Client.KeyFile,
		"--tls-cert-file", listenPair.CertFile, "--tls-key-file", listenPair.KeyFile, "--tls-client-ca-file", m.CAFile,
		"--admin-listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0", "--rls-listen", "127.0.0.1:0")
	addrs := map[string]string{"api": s.addr}
	for _, name := range []string{"admin", "grpc", "rls"} {
		addrs[name], _ = s.waitLog(t, name+" listening", 5*time.Second)["addr"].(string)
	}
	if tlsOn, _ := s.waitLog(t, "listening", time.Second)["tls"].(bool); !tlsOn {
		t.Errorf("the listening line does not say tls")
	}

	good := clientTLS(t, tlsfiles.Files{CAFile: m.CAFile, CertFile: m.Client.CertFile, KeyFile: m.Client.KeyFile})
	httpc := &http.Client{Transport: &http.Transport{TLSClientConfig: good, ForceAttemptHTTP2: true}, Timeout: 10 * time.Second}
	// The API: a check decided by Redis over TLS, 5 of 5 then a 429.
	for i := range 6 {
		resp, err := httpc.Post("https://"+addrs["api"]+"/v1/check", "application/json",
			strings.NewReader(`{"namespace":"orders","subject":"tls-user","cost":20}`))
		if err != nil {
			t.Fatalf("check %d over TLS: %v", i+1, err)
		}
		resp.Body.Close()
		want := 200
		if i >= 5 {
			want = 429
		}
		if resp.StatusCode != want || resp.Header.Get("RateLimit-Decided-By") != "store" {
			t.Fatalf("check %d over TLS: %d decided by %q, want %d by the store", i+1, resp.StatusCode, resp.Header.Get("RateLimit-Decided-By"), want)
		}
		if resp.ProtoMajor != 2 {
			t.Errorf("check %d: HTTP/%d.%d, want HTTP/2 negotiated by ALPN", i+1, resp.ProtoMajor, resp.ProtoMinor)
		}
	}
	// The admin API.
	req, _ := http.NewRequest("GET", "https://"+addrs["admin"]+"/v1/admin/overrides/orders", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	if resp, err := httpc.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("admin over TLS: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	// The certificate's expiry, for an alert before it comes.
	if resp, err := httpc.Get("https://" + addrs["api"] + "/metrics"); err != nil {
		t.Fatal(err)
	} else {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := fmt.Sprintf("ratelimiter_tls_certificate_expiry_timestamp_seconds %g", float64(tlstest.NotAfter(t, listenPair.CertFile).Unix()))
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	// The native gRPC API and Envoy's RLS.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	native := grpcConn(t, addrs["grpc"], good)
	if res, err := pb.NewRateLimiterClient(native).Check(ctx, &pb.CheckRequest{Namespace: "orders", Subject: "tls-grpc"}); err != nil || !res.GetAllowed() {
		t.Fatalf("native gRPC over TLS: %v %v", res, err)
	}
	rls := grpcConn(t, addrs["rls"], good)
	if res, err := rlsv3.NewRateLimitServiceClient(rls).ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{Domain: "orders",
		Descriptors: []*ratelimitcommon.RateLimitDescriptor{{Entries: []*ratelimitcommon.RateLimitDescriptor_Entry{{Key: "subject", Value: "tls-rls"}}}}}); err != nil {
		t.Fatalf("RLS over TLS: %v %v", res, err)
	}

	// Refusals, on every listener.
	wrongCA := clientTLS(t, tlsfiles.Files{CAFile: m.OtherCAFile, CertFile: m.Client.CertFile, KeyFile: m.Client.KeyFile})
	noCert := clientTLS(t, tlsfiles.Files{CAFile: m.CAFile})
	otherCert := clientTLS(t, tlsfiles.Files{CAFile: m.CAFile, CertFile: m.OtherServer.CertFile, KeyFile: m.OtherServer.KeyFile})
	for name, addr := range addrs {
		for _, c := range []struct {
			what string
			cfg  *tls.Config
			want string
		}{
			{"a client trusting another authority", wrongCA, "certificate signed by unknown authority"},
			{"a client without a certificate", noCert, "certificate required"},
			{"a client certificate of another authority", otherCert, "unknown certificate authority"},
		} {
			if err := handshake(addr, c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s listener, %s: %v, want %q", name, c.what, err, c.want)
			}
		}
		if err := handshake(addr, good); err != nil {
			t.Errorf("%s listener, the right material: %v", name, err)
		}
	}

	// Rotation: an expired certificate written over the pair is served from
	// the next handshake (the client says expired), then a fresh one.
	before := servedSerial(t, addrs["api"], good)
	copyFile(t, m.Expired.CertFile, listenPair.CertFile+".tmp")
	copyFile(t, m.Expired.KeyFile, listenPair.KeyFile+".tmp")
	os.Rename(listenPair.KeyFile+".tmp", listenPair.KeyFile)
	os.Rename(listenPair.CertFile+".tmp", listenPair.CertFile)
	for name, addr := range addrs {
		if err := handshake(addr, good); err == nil || !strings.Contains(err.Error(), "expired") {
			t.Errorf("%s listener serving an expired certificate: %v, want an error that says expired", name, err)
		}
	}
	after := m.Reissue(t, listenPair)
	if got := servedSerial(t, addrs["api"], good); got != after.String() || got == before {
		t.Errorf("after rotation: serial %s, want the new %s (was %s)", got, after, before)
	}
	// The connections opened before the rotation still work.
	if res, err := pb.NewRateLimiterClient(native).Check(ctx, &pb.CheckRequest{Namespace: "orders", Subject: "tls-grpc"}); err != nil || !res.GetAllowed() {
		t.Fatalf("native gRPC after rotation, same connection: %v %v", res, err)
	}
}

// A bad TLS flag or file stops serve at start with the reason: never a
// listener without the TLS it was asked for.
func TestTLSBadStart(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	m := tlstest.New(t)
	bin := buildBinary(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--tls-cert-file", m.Server.CertFile}, "--tls-cert-file and --tls-key-file go together"},
		{[]string{"--tls-client-ca-file", m.CAFile}, "--tls-client-ca-file needs --tls-cert-file"},
		{[]string{"--tls-cert-file", m.Server.CertFile, "--tls-key-file", m.Client.KeyFile}, "private key does not match public key"},
		{[]string{"--tls-cert-file", m.Server.CertFile, "--tls-key-file", m.Server.KeyFile, "--tls-client-ca-file", m.Server.KeyFile}, "no PEM certificate"},
		{[]string{"--store", "redis", "--redis-tls-cert-file", m.Client.CertFile}, "--redis-tls-cert-file and --redis-tls-key-file go together"},
		{[]string{"--store", "redis", "--redis-tls-ca-file", filepath.Join(m.Dir, "missing.pem")}, "missing.pem"},
	} {
		r := runBin(t, bin, append([]string{"serve", "--listen", "127.0.0.1:0"}, c.args...)...)
		if r.code == 0 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%q: exit %d, stderr %q; want a failure saying %q", c.args, r.code, r.stderr, c.want)
		}
	}
}

func clientTLS(t *testing.T, f tlsfiles.Files) *tls.Config {
	t.Helper()
	r, err := tlsfiles.NewClient(f, tlsfiles.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return r.ClientConfig("")
}

func grpcConn(t *testing.T, addr string, cfg *tls.Config) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// handshake completes a TLS handshake with addr, offering HTTP/2, and
// reads once: every listener (HTTP/2 or gRPC) speaks first with its
// SETTINGS frame, and with TLS 1.3 a refused client certificate shows as
// the first read's error.
func handshake(addr string, cfg *tls.Config) error {
	cfg = cfg.Clone()
	cfg.NextProtos = []string{"h2"}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = c.Read(make([]byte, 1))
	return err
}

// servedSerial is the serial of the certificate addr serves.
func servedSerial(t *testing.T, addr string, cfg *tls.Config) string {
	t.Helper()
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// serve --dry-run checks the flags, the files they name and the
// configuration, and exits without connecting or listening: 0 when all is
// well (Redis need not be there), 1 with the reason otherwise.
func TestDryRun(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	m := tlstest.New(t)
	bin := buildBinary(t)
	ok := runBin(t, bin, "serve", "--dry-run", "--listen", "127.0.0.1:1", "--store", "redis", "--redis-addrs", "127.0.0.1:1",
		"--redis-tls-ca-file", m.CAFile, "--tls-cert-file", m.Server.CertFile, "--tls-key-file", m.Server.KeyFile)
	if ok.code != 0 || !strings.Contains(ok.stderr, "dry run: flags and configuration are valid") || strings.Contains(ok.stderr, "listening") {
		t.Errorf("valid: exit %d, stderr %q", ok.code, ok.stderr)
	}
	bad := writeConfig(t, "namespaces:\n  - name: orders\n    limits:\n      - {name: a, algorithm: token_bucket, limit: -1, period: 1m}\n")
	for _, args := range [][]string{
		{"--config", bad},
		{"--store", "redis", "--redis-addrs", ""},
		{"--store", "nope"},
		{"--max-keys", "0"},
	} {
		if r := runBin(t, bin, append([]string{"serve", "--dry-run"}, args...)...); r.code != 1 || strings.Contains(r.stderr, "dry run") {
			t.Errorf("%q: exit %d, stderr %q; want 1", args, r.code, r.stderr)
		}
	}
}
