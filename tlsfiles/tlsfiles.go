// Package tlsfiles makes TLS configurations from PEM files that may be
// replaced while the process runs (a certificate rotated by cert-manager, a
// Kubernetes Secret updated in place): the listeners' server certificate and
// the authority their clients' certificates must chain to, and the client
// side of a connection to Redis.
//
// # Model
//
// A Reloader holds the certificate pair (and, for a server, the client
// authority) it last loaded, and the size and modification time of each
// file. At every handshake it looks at the files again (a stat each, no
// read) and, when one changed, loads them anew: the next handshakes use the
// new certificate, the connections already up keep theirs. A change that
// does not load (a key that does not match its certificate, a half-written
// file) keeps the last good material in use and is reported once through
// Options.OnError; the files are tried again at the next handshake after
// they change again. Loading at start is strict: New fails on any bad file.
//
// Both sides require TLS 1.2 or later.
package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"
)

// ErrNoCertificates is returned for an authority file without a PEM
// certificate in it.
var ErrNoCertificates = errors.New("no PEM certificate")

// Files name the PEM files of one side of a connection.
type Files struct {
	// CertFile and KeyFile are this side's certificate (chain) and key:
	// a server's, required; a client's, optional (both or neither).
	CertFile, KeyFile string
	// CAFile is the authority the other side's certificate must chain to.
	// For a server, optional: when set, every client must present a
	// certificate it signed. For a client, optional: the system's roots
	// when empty.
	CAFile string
}

func (f Files) paths() []string {
	var p []string
	for _, s := range []string{f.CertFile, f.KeyFile, f.CAFile} {
		if s != "" {
			p = append(p, s)
		}
	}
	return p
}

// Options tune a Reloader.
type Options struct {
	// OnError receives a change of the files that did not load (the last
	// good material stays in use). Default: ignored.
	OnError func(error)
}

// Reloader is the material of Files, reloaded when they change. It is safe
// for concurrent use.
type Reloader struct {
	files Files
	o     Options

	mu     sync.Mutex
	seen   []stamp // the files as last looked at
	loaded material
}

type material struct {
	cert *tls.Certificate // nil for a client without one
	pool *x509.CertPool   // nil: none (server) or the system's (client)
}

// stamp is what tells a file changed.
type stamp struct {
	size int64
	mod  time.Time
	err  bool
}

// NewServer loads a listener's material: Files.CertFile and KeyFile are
// required. Its Config is what a listener serves with.
func NewServer(f Files, o Options) (*Reloader, error) {
	if f.CertFile == "" || f.KeyFile == "" {
		return nil, errors.New("tlsfiles: a server needs a certificate file and a key file")
	}
	return newReloader(f, o)
}

// NewClient loads a client's material: an authority (or the system's
// roots), and a certificate pair when Files names one.
func NewClient(f Files, o Options) (*Reloader, error) {
	if (f.CertFile == "") != (f.KeyFile == "") {
		return nil, errors.New("tlsfiles: a client certificate needs both its certificate file and its key file")
	}
	return newReloader(f, o)
}

func newReloader(f Files, o Options) (*Reloader, error) {
	r := &Reloader{files: f, o: o}
	r.seen = r.stamps()
	m, err := r.load()
	if err != nil {
		return nil, err
	}
	r.loaded = m
	return r, nil
}

// stamps looks at every file.
func (r *Reloader) stamps() []stamp {
	paths := r.files.paths()
	out := make([]stamp, len(paths))
	for i, p := range paths {
		fi, err := os.Stat(p) // follows symlinks: a Secret's ..data swap shows
		if err != nil {
			out[i] = stamp{err: true}
			continue
		}
		out[i] = stamp{size: fi.Size(), mod: fi.ModTime()}
	}
	return out
}

// load reads every file.
func (r *Reloader) load() (material, error) {
	var m material
	if r.files.CertFile != "" {
		c, err := tls.LoadX509KeyPair(r.files.CertFile, r.files.KeyFile)
		if err != nil {
			return m, fmt.Errorf("tlsfiles: certificate %s, key %s: %w", r.files.CertFile, r.files.KeyFile, err)
		}
		m.cert = &c
	}
	if r.files.CAFile != "" {
		pem, err := os.ReadFile(r.files.CAFile)
		if err != nil {
			return m, fmt.Errorf("tlsfiles: authority: %w", err)
		}
		m.pool = x509.NewCertPool()
		if !m.pool.AppendCertsFromPEM(pem) {
			return m, fmt.Errorf("tlsfiles: authority %s: %w", r.files.CAFile, ErrNoCertificates)
		}
	}
	return m, nil
}

// current returns the material in use, reloaded first when a file
// changed since it was last looked at.
func (r *Reloader) current() material {
	now := r.stamps()
	r.mu.Lock()
	defer r.mu.Unlock()
	if slices.Equal(now, r.seen) {
		return r.loaded
	}
	r.seen = now
	m, err := r.load()
	if err != nil {
		if r.o.OnError != nil {
			r.o.OnError(fmt.Errorf("%w (still serving the last good one)", err))
		}
		return r.loaded
	}
	r.loaded = m
	return m
}

// Certificate is the certificate in use (nil for a client without one).
func (r *Reloader) Certificate() *tls.Certificate { return r.current().cert }

// ServerConfig is a listener's configuration: the reloaded certificate,
// client certificates required and verified when Files.CAFile is set, and
// nextProtos offered in ALPN ("h2" for gRPC; "h2", "http/1.1" for HTTP).
func (r *Reloader) ServerConfig(nextProtos ...string) *tls.Config {
	var mu sync.Mutex
	var built *tls.Config     // for the material of from
	var from *tls.Certificate // a load's certificate: each load makes a new one
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: nextProtos,
		// Each handshake gets the configuration of the files as they are,
		// built once per load.
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			m := r.current()
			mu.Lock()
			defer mu.Unlock()
			if m.cert != from {
				c := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: nextProtos, Certificates: []tls.Certificate{*m.cert}}
				if m.pool != nil {
					c.ClientCAs, c.ClientAuth = m.pool, tls.RequireAndVerifyClientCert
				}
				built, from = c, m.cert
			}
			return built, nil
		},
	}
}

// ClientConfig is a client's configuration for a server named serverName
// (empty: the host dialed): the authority as loaded at start, the client
// certificate reloaded at each handshake.
func (r *Reloader) ClientConfig(serverName string) *tls.Config {
	m := r.current()
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName, RootCAs: m.pool}
	if m.cert != nil {
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return r.current().cert, nil
		}
	}
	return c
}
