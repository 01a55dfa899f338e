// Package tlstest writes the key material of TLS tests to a temporary
// directory: a certificate authority, a server certificate it signed for
// 127.0.0.1 and localhost, a client certificate it signed, an expired
// server certificate it signed, and a second authority with a server
// certificate of its own (the wrong CA). Keys are ECDSA P-256, files PEM.
// Real handshakes with real servers (redis-server, this service's
// listeners) use them; nothing is stubbed.
package tlstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// Pair is a certificate and its key, as files.
type Pair struct{ CertFile, KeyFile string }

// Files are the paths of the material New wrote.
type Files struct {
	Dir string
	// CAFile is the authority that signed Server, Client and Expired.
	CAFile string
	// Server is valid now for 127.0.0.1, ::1 and localhost, for server and
	// client authentication (Redis nodes use it both ways).
	Server Pair
	// Client is a client certificate (CN "ratelimiter").
	Client Pair
	// Expired is a server certificate for the same names that expired an
	// hour ago.
	Expired Pair
	// OtherCAFile is an authority that signed only OtherServer.
	OtherCAFile string
	OtherServer Pair
}

// New writes fresh material into a t.TempDir().
func New(t testing.TB) *Files {
	t.Helper()
	dir := t.TempDir()
	f := &Files{Dir: dir}
	now := time.Now()
	ca, caKey := authority(t, dir, "ca", now)
	f.CAFile = filepath.Join(dir, "ca.pem")
	f.Server = leaf(t, dir, "server", ca, caKey, now.Add(-time.Hour), now.Add(24*time.Hour), true)
	f.Client = leaf(t, dir, "client", ca, caKey, now.Add(-time.Hour), now.Add(24*time.Hour), false)
	f.Expired = leaf(t, dir, "expired", ca, caKey, now.Add(-48*time.Hour), now.Add(-time.Hour), true)
	other, otherKey := authority(t, dir, "other-ca", now)
	f.OtherCAFile = filepath.Join(dir, "other-ca.pem")
	f.OtherServer = leaf(t, dir, "other-server", other, otherKey, now.Add(-time.Hour), now.Add(24*time.Hour), true)
	return f
}

// Reissue writes a new server certificate (a new serial, the same CA)
// over p, as a certificate rotation does, and returns its serial.
func (f *Files) Reissue(t testing.TB, p Pair) *big.Int {
	t.Helper()
	ca, key := f.loadCA(t)
	now := time.Now()
	n := leaf(t, f.Dir, "reissued", ca, key, now.Add(-time.Hour), now.Add(24*time.Hour), true)
	for _, m := range [][2]string{{n.CertFile, p.CertFile}, {n.KeyFile, p.KeyFile}} {
		b, err := os.ReadFile(m[0])
		if err != nil {
			t.Fatal(err)
		}
		// Written beside and renamed over, as a Kubernetes Secret's
		// update swaps files: a reader never sees half a file.
		tmp := m[1] + ".tmp"
		if err := os.WriteFile(tmp, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, m[1]); err != nil {
			t.Fatal(err)
		}
	}
	return Serial(t, p.CertFile)
}

// Serial is the serial number of the certificate in file.
func Serial(t testing.TB, file string) *big.Int {
	t.Helper()
	return parse(t, file).SerialNumber
}

// NotAfter is when the certificate in file expires.
func NotAfter(t testing.TB, file string) time.Time {
	t.Helper()
	return parse(t, file).NotAfter
}

func parse(t testing.TB, file string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("tlstest: %s: no PEM block", file)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (f *Files) loadCA(t testing.TB) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	c, err := tls.LoadX509KeyPair(f.CAFile, filepath.Join(f.Dir, "ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return c.Leaf, c.PrivateKey.(*ecdsa.PrivateKey)
}

var serial atomic.Int64

func init() { serial.Store(time.Now().UnixNano()) }

func nextSerial() *big.Int { return big.NewInt(serial.Add(1)) }

func authority(t testing.TB, dir, name string, now time.Time) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          nextSerial(),
		Subject:               pkix.Name{CommonName: "ratelimiter test " + name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	return issue(t, tmpl, nil, nil, filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem"))
}

// issue makes a key and a certificate of tmpl signed by parent with
// parentKey (self-signed when parent is nil), and writes both.
func issue(t testing.TB, tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, certFile, keyFile string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	write(t, certFile, "CERTIFICATE", der)
	writeKey(t, keyFile, key)
	return cert, key
}

func leaf(t testing.TB, dir, name string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, notBefore, notAfter time.Time, server bool) Pair {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(),
		Subject:      pkix.Name{CommonName: "ratelimiter"},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
		tmpl.DNSNames = []string{"localhost"}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	}
	p := Pair{CertFile: filepath.Join(dir, name+"-cert.pem"), KeyFile: filepath.Join(dir, name+"-key.pem")}
	issue(t, tmpl, ca, caKey, p.CertFile, p.KeyFile)
	return p
}

func writeKey(t testing.TB, path string, key *ecdsa.PrivateKey) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write(t, path, "PRIVATE KEY", der)
}

func write(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
