package config

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/distributedratelimiter/ratelimiter/policy"
)

// Source is where a running policy is read from: a configuration file, an
// envoyproxy/ratelimit configuration (a file, or a directory of them: see
// envoy.go), or both, whose namespaces then sit side by side (a domain may
// not share a namespace's name).
type Source struct {
	Config       string
	Envoy        string
	EnvoyOptions EnvoyOptions
}

// Empty reports a source without files.
func (s Source) Empty() bool { return s.Config == "" && s.Envoy == "" }

// String names the source in logs: "orders.yaml", "envoy:/etc/ratelimit",
// or both joined by " + ".
func (s Source) String() string {
	switch {
	case s.Envoy == "":
		return s.Config
	case s.Config == "":
		return "envoy:" + s.Envoy
	}
	return s.Config + " + envoy:" + s.Envoy
}

// Read reads and parses the source at now. key identifies what was read
// (the content of every file, or the error reading one), so that a caller
// can skip an unchanged source; with only a configuration file it is the
// file's Version, which is also the snapshot's. snap is nil when err is
// not: a read error (not wrapping ErrInvalid), or every problem of every
// file (wrapping ErrInvalid).
func (s Source) Read(now time.Time) (key string, snap *policy.Snapshot, err error) {
	if s.Empty() {
		return "", nil, errors.New("config: no configuration file")
	}
	var data []byte
	if s.Config != "" {
		if data, err = ReadFile(s.Config); err != nil {
			return "error: " + err.Error(), nil, err
		}
	}
	var names []string
	var contents [][]byte
	if s.Envoy != "" {
		if names, contents, err = EnvoyData(s.Envoy); err != nil {
			err = fmt.Errorf("--envoy-config: %w", err)
			return "error: " + err.Error(), nil, err
		}
	}
	key = version(data)
	if s.Envoy != "" {
		h := sha256.New()
		h.Write([]byte(key))
		for i, n := range names {
			fmt.Fprintf(h, "\x00%s\x00%d\x00", n, len(contents[i]))
			h.Write(contents[i])
		}
		key = hex.EncodeToString(h.Sum(nil))[:16]
	}
	var extra []policy.Namespace
	if s.Envoy != "" {
		if extra, err = ParseEnvoy(names, contents, s.EnvoyOptions); err != nil {
			return key, nil, err
		}
		if len(names) == 0 {
			return key, nil, fmt.Errorf("%w: --envoy-config %s: no *.yaml or *.yml file", ErrInvalid, s.Envoy)
		}
	}
	if s.Config == "" {
		snap, err := policy.New(extra, key, now)
		if err != nil {
			return key, nil, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		return key, snap, nil
	}
	snap, errs := parseWith(data, s.Config, key, now, extra)
	if len(errs) > 0 {
		return key, nil, errors.Join(errs...)
	}
	return key, snap, nil
}

// IsDir reports whether path is a directory.
func IsDir(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}
