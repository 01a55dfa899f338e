package redistest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Sentinel settings used by [Sentinel]. They are short so that failover
// tests finish quickly: a primary is considered down after
// SentinelDownAfter without a valid reply.
const (
	SentinelCount           = 3
	SentinelQuorum          = 2
	SentinelDownAfter       = 1000 * time.Millisecond
	SentinelFailoverTimeout = 5000 * time.Millisecond
)

// SentinelSet is a primary, one replica and [SentinelCount] sentinels
// monitoring the primary under one master name, started by [Sentinel].
type SentinelSet struct {
	masterName string
	primary    *Server
	replicas   []*Server
	sentinels  []*Server
}

// Sentinel starts a primary, one replica of it and three sentinels
// (redis-server sentinel.conf --sentinel) that monitor the primary as
// masterName with quorum 2, down-after-milliseconds 1000 and
// failover-timeout 5000. Each sentinel gets a writable sentinel.conf in its
// own temp directory, since sentinels rewrite their config.
//
// It returns once every sentinel reports the primary as master (flags
// "master", not down), knows the two other sentinels and sees the replica
// as a healthy replica — i.e. once a failover could actually happen. The
// sentinels discover each other through hello messages published every
// 2s, so this takes about two seconds. opts apply to the primary and the
// replica, not to the sentinels.
func Sentinel(t testing.TB, masterName string, opts ...Option) *SentinelSet {
	t.Helper()
	if masterName == "" || strings.ContainsAny(masterName, " \t\r\n\"'") {
		t.Fatalf("redistest: Sentinel: invalid master name %q", masterName)
	}
	set := &SentinelSet{masterName: masterName}
	set.primary = startDataNode(t, buildOptions("primary", opts), 1, nil)
	set.replicas = []*Server{startReplica(t, set.primary, "replica-1", opts)}
	if err := waitLinksUp(set.replicas, DefaultTopologyTimeout); err != nil {
		t.Fatalf("redistest: Sentinel: %v", err)
	}
	for i := range SentinelCount {
		set.sentinels = append(set.sentinels, startSentinel(t, fmt.Sprintf("sentinel-%d", i+1), masterName, set.primary.clientPort(), buildOptions("", opts).tls))
	}
	if err := set.waitSentinelsReady(DefaultTopologyTimeout); err != nil {
		t.Fatalf("redistest: Sentinel: %v", err)
	}
	return set
}

// startSentinel starts one sentinel monitoring 127.0.0.1:primaryPort. The
// config file is written for each start attempt (the port is in it); a
// Restart reuses the file as the sentinel last rewrote it.
func startSentinel(t testing.TB, name, masterName string, primaryPort int, tls *TLS) *Server {
	t.Helper()
	o := buildOptions(name, nil)
	nports := 1
	if tls != nil {
		nports = 2
	}
	return startWith(t, o, nports, func(s *Server, ports []int) ([]string, error) {
		conf := filepath.Join(s.dir, "sentinel.conf")
		var b strings.Builder
		fmt.Fprintf(&b, "port %d\n", ports[0])
		if tls != nil {
			// Its own TLS port, and TLS to the servers it monitors.
			s.tlsPort = ports[1]
			args := tlsArgs(tls, s.tlsPort)
			for i := 0; i+1 < len(args); i += 2 {
				fmt.Fprintf(&b, "%s %s\n", strings.TrimPrefix(args[i], "--"), strconv.Quote(args[i+1]))
			}
		}
		b.WriteString("bind 127.0.0.1\n")
		b.WriteString("protected-mode no\n")
		b.WriteString("daemonize no\n")
		fmt.Fprintf(&b, "dir %s\n", strconv.Quote(s.dir))
		fmt.Fprintf(&b, "logfile %s\n", strconv.Quote(s.logFile))
		b.WriteString("sentinel resolve-hostnames no\n")
		b.WriteString("sentinel announce-hostnames no\n")
		fmt.Fprintf(&b, "sentinel monitor %s 127.0.0.1 %d %d\n", masterName, primaryPort, SentinelQuorum)
		fmt.Fprintf(&b, "sentinel down-after-milliseconds %s %d\n", masterName, SentinelDownAfter.Milliseconds())
		fmt.Fprintf(&b, "sentinel failover-timeout %s %d\n", masterName, SentinelFailoverTimeout.Milliseconds())
		fmt.Fprintf(&b, "sentinel parallel-syncs %s 1\n", masterName)
		if err := os.WriteFile(conf, []byte(b.String()), 0o600); err != nil {
			return nil, fmt.Errorf("write sentinel config: %w", err)
		}
		return []string{conf, "--sentinel"}, nil
	})
}

// MasterName returns the name the sentinels monitor the primary under.
func (s *SentinelSet) MasterName() string { return s.masterName }

// Primary returns the server started as primary. After a failover it may
// have become a replica (or be down); use [SentinelSet.CurrentPrimary] for
// the sentinels' current view.
func (s *SentinelSet) Primary() *Server { return s.primary }

// Replicas returns the servers started as replicas.
func (s *SentinelSet) Replicas() []*Server { return append([]*Server(nil), s.replicas...) }

// Sentinels returns the sentinel servers.
func (s *SentinelSet) Sentinels() []*Server { return append([]*Server(nil), s.sentinels...) }

// SentinelTLSAddrs returns the sentinels' TLS addresses (WithTLS).
func (s *SentinelSet) SentinelTLSAddrs() []string {
	addrs := make([]string, len(s.sentinels))
	for i, sn := range s.sentinels {
		addrs[i] = sn.TLSAddr()
	}
	return addrs
}

// SentinelAddrs returns the sentinels' addresses, e.g. for a client's
// sentinel configuration.
func (s *SentinelSet) SentinelAddrs() []string {
	addrs := make([]string, len(s.sentinels))
	for i, sn := range s.sentinels {
		addrs[i] = sn.Addr()
	}
	return addrs
}

// DataNodes returns the primary and the replicas as started.
func (s *SentinelSet) DataNodes() []*Server {
	return append([]*Server{s.primary}, s.replicas...)
}

// ServerByAddr returns the data node listening on addr, or nil.
func (s *SentinelSet) ServerByAddr(addr string) *Server {
	for _, n := range s.DataNodes() {
		if n.Addr() == addr || n.TLSAddr() == addr {
			return n
		}
	}
	return nil
}

// MasterAddr asks the sentinels (the first running one that answers)
// SENTINEL get-master-addr-by-name and returns the address as "IP:PORT".
func (s *SentinelSet) MasterAddr() (string, error) {
	var errs []error
	for _, sn := range s.sentinels {
		if !sn.Running() {
			continue
		}
		addr, err := sentinelMasterAddr(sn, s.masterName)
		if err == nil {
			return addr, nil
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return "", errors.New("redistest: no sentinel is running")
	}
	return "", fmt.Errorf("redistest: no sentinel answered: %w", errors.Join(errs...))
}

// CurrentPrimary returns the data node that the sentinels currently report
// as master.
func (s *SentinelSet) CurrentPrimary() (*Server, error) {
	addr, err := s.MasterAddr()
	if err != nil {
		return nil, err
	}
	if n := s.ServerByAddr(addr); n != nil {
		return n, nil
	}
	return nil, fmt.Errorf("redistest: sentinels report master %s, which is not a node of this set", addr)
}

// WaitMaster waits until every running sentinel reports addr ("IP:PORT") as
// the master's address, polling every 20ms, for at most timeout. Use it
// after killing the primary to wait for the failover to complete.
func (s *SentinelSet) WaitMaster(addr string, timeout time.Duration) error {
	err := poll(timeout, func() error {
		for _, sn := range s.sentinels {
			if !sn.Running() {
				continue
			}
			got, err := sentinelMasterAddr(sn, s.masterName)
			if err != nil {
				return err
			}
			if got != addr {
				return fmt.Errorf("%s reports master %s, want %s", sn.Name(), got, addr)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("redistest: wait for sentinels to report master %s: %w", addr, err)
	}
	return nil
}

// WaitFailover waits until every running sentinel reports a master address
// other than old, and the same one, and returns it.
func (s *SentinelSet) WaitFailover(old string, timeout time.Duration) (string, error) {
	var current string
	err := poll(timeout, func() error {
		current = ""
		for _, sn := range s.sentinels {
			if !sn.Running() {
				continue
			}
			got, err := sentinelMasterAddr(sn, s.masterName)
			if err != nil {
				return err
			}
			if got == old {
				return fmt.Errorf("%s still reports master %s", sn.Name(), old)
			}
			if current != "" && got != current {
				return fmt.Errorf("sentinels disagree: %s vs %s", current, got)
			}
			current = got
		}
		if current == "" {
			return errors.New("no sentinel is running")
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("redistest: wait for failover away from %s: %w", old, err)
	}
	return current, nil
}

// sentinelMasterAddr runs SENTINEL get-master-addr-by-name on one sentinel.
func sentinelMasterAddr(sn *Server, masterName string) (string, error) {
	v, err := sn.Do("SENTINEL", "get-master-addr-by-name", masterName)
	if err != nil {
		return "", fmt.Errorf("%s (%s): get-master-addr-by-name %s: %w", sn.Name(), sn.Addr(), masterName, err)
	}
	host, port, ok := strings.Cut(v, "\n")
	if !ok {
		return "", fmt.Errorf("%s (%s): get-master-addr-by-name %s: unexpected reply %q", sn.Name(), sn.Addr(), masterName, v)
	}
	return net.JoinHostPort(host, port), nil
}

// waitSentinelsReady waits until each sentinel sees the primary as an
// healthy master, knows the other sentinels and sees every replica as a
// healthy, linked replica.
func (s *SentinelSet) waitSentinelsReady(timeout time.Duration) error {
	return poll(timeout, func() error {
		for _, sn := range s.sentinels {
			m, err := sentinelFields(sn, "SENTINEL", "MASTER", s.masterName)
			if err != nil {
				return err
			}
			if m["flags"] != "master" {
				return fmt.Errorf("%s: master flags %q", sn.Name(), m["flags"])
			}
			if got, want := m["num-other-sentinels"], strconv.Itoa(len(s.sentinels)-1); got != want {
				return fmt.Errorf("%s: num-other-sentinels=%s, want %s", sn.Name(), got, want)
			}
			if got, want := m["num-slaves"], strconv.Itoa(len(s.replicas)); got != want {
				return fmt.Errorf("%s: num-slaves=%s, want %s", sn.Name(), got, want)
			}
			reps, err := sentinelList(sn, "SENTINEL", "REPLICAS", s.masterName)
			if err != nil {
				return err
			}
			for _, r := range reps {
				if r["flags"] != "slave" || r["master-link-status"] != "ok" {
					return fmt.Errorf("%s: replica %s:%s flags=%q master-link-status=%q",
						sn.Name(), r["ip"], r["port"], r["flags"], r["master-link-status"])
				}
			}
		}
		return nil
	})
}

// sentinelFields runs a command whose reply is a flat key/value array and
// returns it as a map.
func sentinelFields(sn *Server, args ...string) (map[string]string, error) {
	v, err := doRaw(sn.Addr(), DoTimeout, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", sn.Name(), strings.Join(args, " "), err)
	}
	arr, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("%s: %s: reply is %T, not an array", sn.Name(), strings.Join(args, " "), v)
	}
	return pairs(arr), nil
}

// sentinelList runs a command whose reply is an array of flat key/value
// arrays (SENTINEL REPLICAS, SENTINEL SENTINELS).
func sentinelList(sn *Server, args ...string) ([]map[string]string, error) {
	v, err := doRaw(sn.Addr(), DoTimeout, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", sn.Name(), strings.Join(args, " "), err)
	}
	arr, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("%s: %s: reply is %T, not an array", sn.Name(), strings.Join(args, " "), v)
	}
	out := make([]map[string]string, 0, len(arr))
	for _, e := range arr {
		sub, ok := e.([]any)
		if !ok {
			return nil, fmt.Errorf("%s: %s: element is %T, not an array", sn.Name(), strings.Join(args, " "), e)
		}
		out = append(out, pairs(sub))
	}
	return out, nil
}

// pairs turns [k1 v1 k2 v2 ...] into a map; non-string values are skipped.
func pairs(arr []any) map[string]string {
	m := make(map[string]string, len(arr)/2)
	for i := 0; i+1 < len(arr); i += 2 {
		k, ok1 := arr[i].(string)
		v, ok2 := arr[i+1].(string)
		if ok1 && ok2 {
			m[k] = v
		}
	}
	return m
}
