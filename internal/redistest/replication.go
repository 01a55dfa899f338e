package redistest

import (
	"fmt"
	"strconv"
	"testing"
	"time"
)

// DefaultTopologyTimeout bounds how long a constructor waits for a topology
// to become ready (replicas linked, sentinels agreeing, cluster ok) once
// its processes answer PING.
const DefaultTopologyTimeout = 20 * time.Second

// Replication is a primary and its replicas, each a [Server] started by
// [Replicated].
type Replication struct {
	primary  *Server
	replicas []*Server
}

// Replicated starts a primary and n replicas (--replicaof 127.0.0.1 PORT)
// and returns once every replica reports master_link_status:up in INFO
// replication, i.e. has completed its initial sync. opts apply to every
// server. Everything is stopped in t.Cleanup, replicas first.
func Replicated(t testing.TB, n int, opts ...Option) *Replication {
	t.Helper()
	if n < 0 {
		t.Fatalf("redistest: Replicated: negative replica count %d", n)
	}
	r := &Replication{primary: startDataNode(t, buildOptions("primary", opts), 1, nil)}
	for i := range n {
		r.replicas = append(r.replicas, startReplica(t, r.primary, fmt.Sprintf("replica-%d", i+1), opts))
	}
	if err := r.WaitSynced(DefaultTopologyTimeout); err != nil {
		t.Fatalf("redistest: Replicated: %v", err)
	}
	return r
}

// startReplica starts a data node replicating from primary.
func startReplica(t testing.TB, primary *Server, name string, opts []Option) *Server {
	t.Helper()
	o := buildOptions(name, opts)
	return startDataNode(t, o, 1, func(*Server, []int) []string {
		return []string{"--replicaof", "127.0.0.1", strconv.Itoa(primary.clientPort())}
	})
}

// Primary returns the server started as primary.
func (r *Replication) Primary() *Server { return r.primary }

// Replicas returns the servers started as replicas, in start order.
func (r *Replication) Replicas() []*Server { return append([]*Server(nil), r.replicas...) }

// WaitSynced waits until every running replica reports
// master_link_status:up, polling every 20ms, for at most timeout.
func (r *Replication) WaitSynced(timeout time.Duration) error {
	return waitLinksUp(r.replicas, timeout)
}

// WaitReplicaUp waits until s, running as a replica (a primary that came
// back after a failover, say), reports master_link_status:up, for at most
// timeout.
func (s *Server) WaitReplicaUp(timeout time.Duration) error {
	return waitLinksUp([]*Server{s}, timeout)
}

// waitLinksUp waits until every running server in replicas reports
// master_link_status:up, for at most timeout in all.
func waitLinksUp(replicas []*Server, timeout time.Duration) error {
	err := poll(timeout, func() error {
		for _, rep := range replicas {
			if !rep.Running() {
				continue
			}
			info, err := rep.Info("replication")
			if err != nil {
				return fmt.Errorf("%s (%s): %w", rep.Name(), rep.Addr(), err)
			}
			if st := info["master_link_status"]; st != "up" {
				return fmt.Errorf("%s (%s): role=%s master_link_status=%q", rep.Name(), rep.Addr(), info["role"], st)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("replicas not in sync: %w", err)
	}
	return nil
}

// poll calls check every pollInterval until it returns nil or timeout has
// passed, in which case it returns the last error from check.
func poll(timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still not ready after %v: %w", timeout, err)
		}
		time.Sleep(pollInterval)
	}
}
