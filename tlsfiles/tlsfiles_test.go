package tlsfiles_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/distributedratelimiter/ratelimiter/internal/tlstest"
	"github.com/distributedratelimiter/ratelimiter/tlsfiles"
)

// listen serves cfg on a loopback port: each connection completes its
// handshake, writes "ok" and closes.
func listen(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	addr, _ := listenClients(t, cfg)
	return addr
}

// listenClients is listen that also reports the serial of each client
// certificate presented (the channel holds 16; more are dropped).
func listenClients(t *testing.T, cfg *tls.Config) (string, <-chan string) {
	t.Helper()
	clients := make(chan string, 16)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				tc := c.(*tls.Conn)
				if tc.Handshake() != nil {
					return
				}
				if peers := tc.ConnectionState().PeerCertificates; len(peers) > 0 {
					select {
					case clients <- peers[0].SerialNumber.String():
					default:
					}
				}
				c.Write([]byte("ok"))
			})
		}
	})
	return ln.Addr().String(), clients
}

// dial completes a handshake with addr and returns the serial of the
// server's certificate.
func dial(addr string, cfg *tls.Config) (string, error) {
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return "", err
	}
	defer c.Close()
	buf := make([]byte, 2)
	if _, err := c.Read(buf); err != nil {
		return "", err
	}
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
}

func server(t *testing.T, f tlsfiles.Files, o tlsfiles.Options) *tlsfiles.Reloader {
	t.Helper()
	r, err := tlsfiles.NewServer(f, o)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func client(t *testing.T, f tlsfiles.Files) *tls.Config {
	t.Helper()
	r, err := tlsfiles.NewClient(f, tlsfiles.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return r.ClientConfig("")
}

// A client that trusts the authority completes the handshake; one that
// trusts another authority, or is served an expired certificate, gets the
// verification error that says so.
func TestHandshakes(t *testing.T) {
	m := tlstest.New(t)
	good := listen(t, server(t, tlsfiles.Files{CertFile: m.Server.CertFile, KeyFile: m.Server.KeyFile}, tlsfiles.Options{}).ServerConfig())
	if _, err := dial(good, client(t, tlsfiles.Files{CAFile: m.CAFile})); err != nil {
		t.Fatalf("trusted authority: %v", err)
	}
	var unknown x509.UnknownAuthorityError
	if _, err := dial(good, client(t, tlsfiles.Files{CAFile: m.OtherCAFile})); !errors.As(err, &unknown) {
		t.Errorf("wrong authority: %v, want certificate signed by unknown authority", err)
	}
	expired := listen(t, server(t, tlsfiles.Files{CertFile: m.Expired.CertFile, KeyFile: m.Expired.KeyFile}, tlsfiles.Options{}).ServerConfig())
	if _, err := dial(expired, client(t, tlsfiles.Files{CAFile: m.CAFile})); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired certificate: %v, want an error that says expired", err)
	}
}

// With a client authority, a client without a certificate, or with one
// another authority signed, is refused; one with a certificate the
// authority signed gets through.
func TestClientCertificates(t *testing.T) {
	m := tlstest.New(t)
	addr := listen(t, server(t, tlsfiles.Files{CertFile: m.Server.CertFile, KeyFile: m.Server.KeyFile, CAFile: m.CAFile}, tlsfiles.Options{}).ServerConfig())
	if _, err := dial(addr, client(t, tlsfiles.Files{CAFile: m.CAFile})); err == nil || !strings.Contains(err.Error(), "certificate required") {
		t.Errorf("no client certificate: %v, want certificate required", err)
	}
	if _, err := dial(addr, client(t, tlsfiles.Files{CAFile: m.CAFile, CertFile: m.OtherServer.CertFile, KeyFile: m.OtherServer.KeyFile})); err == nil || !strings.Contains(err.Error(), "unknown certificate authority") {
		t.Errorf("client certificate of another authority: %v, want unknown certificate authority", err)
	}
	if _, err := dial(addr, client(t, tlsfiles.Files{CAFile: m.CAFile, CertFile: m.Client.CertFile, KeyFile: m.Client.KeyFile})); err != nil {
		t.Errorf("client certificate of the authority: %v", err)
	}
}

// A rotated certificate is served from the next handshake on, without a
// restart; a rotation that does not load keeps the last good one in use,
// reported once.
func TestReloadOnChange(t *testing.T) {
	m := tlstest.New(t)
	var errs []error
	var mu sync.Mutex
	r := server(t, tlsfiles.Files{CertFile: m.Server.CertFile, KeyFile: m.Server.KeyFile}, tlsfiles.Options{OnError: func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}})
	addr := listen(t, r.ServerConfig())
	cc := client(t, tlsfiles.Files{CAFile: m.CAFile})
	first, err := dial(addr, cc)
	if err != nil || first != tlstest.Serial(t, m.Server.CertFile).String() {
		t.Fatalf("before: serial %s, %v", first, err)
	}
	want := m.Reissue(t, m.Server).String()
	if got, err := dial(addr, cc); err != nil || got != want || got == first {
		t.Fatalf("after rotation: serial %s (%v), want %s", got, err, want)
	}
	// A key that is not the certificate's: refused, the last good one
	// stays, one report however many handshakes.
	other, err := os.ReadFile(m.Client.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.Server.KeyFile, append(other, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if got, err := dial(addr, cc); err != nil || got != want {
			t.Fatalf("after a bad rotation: serial %s (%v), want the last good %s", got, err, want)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "still serving the last good one") {
		t.Errorf("reports: %v, want one", errs)
	}
}

// Bad files at start are errors, never a listener without TLS.
func TestBadFilesAtStart(t *testing.T) {
	m := tlstest.New(t)
	for name, f := range map[string]tlsfiles.Files{
		"no key":            {CertFile: m.Server.CertFile},
		"missing file":      {CertFile: m.Server.CertFile, KeyFile: m.Dir + "/nope.pem"},
		"mismatched key":    {CertFile: m.Server.CertFile, KeyFile: m.Client.KeyFile},
		"authority not PEM": {CertFile: m.Server.CertFile, KeyFile: m.Server.KeyFile, CAFile: m.Server.KeyFile},
	} {
		if _, err := tlsfiles.NewServer(f, tlsfiles.Options{}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := tlsfiles.NewClient(tlsfiles.Files{CertFile: m.Client.CertFile}, tlsfiles.Options{}); err == nil {
		t.Error("client certificate without key: accepted")
	}
	if _, err := tlsfiles.NewClient(tlsfiles.Files{CAFile: m.Server.KeyFile}, tlsfiles.Options{}); !errors.Is(err, tlsfiles.ErrNoCertificates) {
		t.Errorf("client authority without a certificate: %v", err)
	}
}

// A client's certificate is re-read when its files change: the next
// handshake presents the rotated one, without a new configuration.
func TestClientCertificateReload(t *testing.T) {
	m := tlstest.New(t)
	addr, seen := listenClients(t, server(t, tlsfiles.Files{CertFile: m.Server.CertFile, KeyFile: m.Server.KeyFile, CAFile: m.CAFile}, tlsfiles.Options{}).ServerConfig())
	// The client's own copy of a pair, rotated below.
	pair := tlstest.Pair{CertFile: m.Dir + "/mine-cert.pem", KeyFile: m.Dir + "/mine-key.pem"}
	for _, f := range [][2]string{{m.Client.CertFile, pair.CertFile}, {m.Client.KeyFile, pair.KeyFile}} {
		b, err := os.ReadFile(f[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f[1], b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := client(t, tlsfiles.Files{CAFile: m.CAFile, CertFile: pair.CertFile, KeyFile: pair.KeyFile})
	if _, err := dial(addr, cfg); err != nil {
		t.Fatal(err)
	}
	if got, want := <-seen, tlstest.Serial(t, m.Client.CertFile).String(); got != want {
		t.Fatalf("first handshake presented %s, want %s", got, want)
	}
	want := m.Reissue(t, pair).String()
	if _, err := dial(addr, cfg); err != nil {
		t.Fatal(err)
	}
	if got := <-seen; got != want {
		t.Fatalf("after rotation the client presented %s, want the new %s", got, want)
	}
}
