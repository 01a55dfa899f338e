package redistest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Cluster settings used by [Cluster].
const (
	// ClusterSlots is the number of hash slots of a Redis Cluster.
	ClusterSlots = 16384
	// ClusterNodeTimeout is the cluster-node-timeout of every node: a
	// primary unreachable for this long is failed over to its replica.
	ClusterNodeTimeout = 2000 * time.Millisecond
	// clusterCreateTimeout bounds redis-cli --cluster create.
	clusterCreateTimeout = 60 * time.Second
)

// ClusterSet is a Redis Cluster started by [Cluster].
type ClusterSet struct {
	primaries int
	nodes     []*Server
}

// Cluster starts primaries*(1+replicasPerPrimary) cluster-enabled
// redis-servers, creates a cluster from them with
//
//	redis-cli --cluster create ADDR... --cluster-replicas N --cluster-yes
//
// and returns once it is healthy as defined by [ClusterSet.WaitHealthy].
// primaries must be at least 3 (a redis-cli requirement).
//
// Every node runs with --cluster-enabled yes, --cluster-config-file
// DIR/nodes.conf, --cluster-node-timeout 2000 and
// --cluster-allow-reads-when-down no. Each node gets a second free port as
// its cluster bus port (--cluster-port), instead of the default PORT+10000,
// which could be out of range or taken. opts apply to every node.
//
// redis-cli decides which nodes become replicas; use
// [ClusterSet.Primaries] and [ClusterSet.Replicas] to find out.
func Cluster(t testing.TB, primaries, replicasPerPrimary int, opts ...Option) *ClusterSet {
	t.Helper()
	if primaries < 3 {
		t.Fatalf("redistest: Cluster: need at least 3 primaries, got %d", primaries)
	}
	if replicasPerPrimary < 0 {
		t.Fatalf("redistest: Cluster: negative replica count %d", replicasPerPrimary)
	}
	cli := CLIBinary(t)
	c := &ClusterSet{primaries: primaries}
	total := primaries * (1 + replicasPerPrimary)
	for i := range total {
		o := buildOptions(fmt.Sprintf("node-%d", i+1), opts)
		node := startDataNode(t, o, 2, func(s *Server, ports []int) []string {
			args := []string{
				"--cluster-enabled", "yes",
				"--cluster-config-file", filepath.Join(s.dir, "nodes.conf"),
				"--cluster-node-timeout", strconv.FormatInt(ClusterNodeTimeout.Milliseconds(), 10),
				"--cluster-allow-reads-when-down", "no",
				"--cluster-port", strconv.Itoa(ports[1]),
			}
			if o.tls != nil {
				args = append(args, "--tls-cluster", "yes") // the bus too
			}
			return args
		})
		c.nodes = append(c.nodes, node)
	}

	args := []string{"--cluster", "create"}
	args = append(args, c.Addrs()...)
	args = append(args, "--cluster-replicas", strconv.Itoa(replicasPerPrimary), "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), clusterCreateTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, cli, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("redistest: Cluster: %s %s: %v\n%s", cli, strings.Join(args, " "), err, out)
	}
	if err := c.WaitHealthy(DefaultTopologyTimeout); err != nil {
		t.Fatalf("redistest: Cluster: %v\nredis-cli output:\n%s", err, out)
	}
	return c
}

// Nodes returns every node, in start order.
func (c *ClusterSet) Nodes() []*Server { return append([]*Server(nil), c.nodes...) }

// Addrs returns every node's address, in start order (seed addresses for a
// cluster client).
func (c *ClusterSet) Addrs() []string {
	addrs := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		addrs[i] = n.Addr()
	}
	return addrs
}

// ClusterNode is one line of CLUSTER NODES.
type ClusterNode struct {
	ID     string
	Addr   string   // "IP:PORT", without the bus port
	Flags  []string // e.g. ["myself" "master"], ["slave"], ["master" "fail"]
	Master string   // ID of the primary for a replica, "-" for a primary
	Link   string   // "connected" or "disconnected"
	Slots  []string // slot ranges as printed ("0-5460", "[93->-...]")
}

// HasFlag reports whether the node has the given flag.
func (n ClusterNode) HasFlag(f string) bool { return slices.Contains(n.Flags, f) }

// ParseClusterNodes parses the reply of CLUSTER NODES.
func ParseClusterNodes(reply string) ([]ClusterNode, error) {
	var nodes []ClusterNode
	for _, line := range strings.Split(reply, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 8 {
			return nil, fmt.Errorf("redistest: malformed CLUSTER NODES line %q", line)
		}
		addr, _, _ := strings.Cut(f[1], "@") // "ip:port@cport[,hostname]"
		addr, _, _ = strings.Cut(addr, ",")
		nodes = append(nodes, ClusterNode{
			ID:     f[0],
			Addr:   addr,
			Flags:  strings.Split(f[2], ","),
			Master: f[3],
			Link:   f[7],
			Slots:  f[8:],
		})
	}
	return nodes, nil
}

// ClusterNodes returns CLUSTER NODES as seen by the first running node
// that answers.
func (c *ClusterSet) ClusterNodes() ([]ClusterNode, error) {
	var errs []error
	for _, n := range c.nodes {
		if !n.Running() {
			continue
		}
		v, err := n.Do("CLUSTER", "NODES")
		if err != nil {
			errs = append(errs, fmt.Errorf("%s (%s): %w", n.Name(), n.Addr(), err))
			continue
		}
		return ParseClusterNodes(v)
	}
	if len(errs) == 0 {
		return nil, errors.New("redistest: no cluster node is running")
	}
	return nil, fmt.Errorf("redistest: no cluster node answered CLUSTER NODES: %w", errors.Join(errs...))
}

// Primaries returns the nodes that are currently primaries serving slots
// (flag master, not fail, at least one slot), as reported by CLUSTER NODES
// of the first running node, in start order. After a failover this
// includes the promoted replica.
func (c *ClusterSet) Primaries() ([]*Server, error) {
	return c.byRole(func(n ClusterNode) bool {
		return n.HasFlag("master") && !n.HasFlag("fail") && len(n.Slots) > 0
	})
}

// Replicas returns the nodes that are currently replicas (flag slave, not
// fail), as reported by CLUSTER NODES, in start order.
func (c *ClusterSet) Replicas() ([]*Server, error) {
	return c.byRole(func(n ClusterNode) bool {
		return n.HasFlag("slave") && !n.HasFlag("fail")
	})
}

func (c *ClusterSet) byRole(match func(ClusterNode) bool) ([]*Server, error) {
	view, err := c.ClusterNodes()
	if err != nil {
		return nil, err
	}
	want := make(map[string]bool)
	for _, n := range view {
		if match(n) {
			want[n.Addr] = true
		}
	}
	var out []*Server
	for _, s := range c.nodes {
		if want[s.Addr()] {
			out = append(out, s)
			delete(want, s.Addr())
		}
	}
	if len(want) > 0 {
		return out, fmt.Errorf("redistest: CLUSTER NODES lists nodes not in this set: %v", slices.Sorted(maps.Keys(want)))
	}
	return out, nil
}

// WaitHealthy waits, polling every 20ms for at most timeout, until the
// cluster is healthy from every running node's point of view:
//
//   - CLUSTER INFO reports cluster_state:ok, cluster_slots_assigned:16384,
//     cluster_slots_ok:16384 and cluster_known_nodes equal to the number of
//     nodes in the set;
//   - CLUSTER NODES shows the same set of slot-serving primaries on every
//     node, as many as the cluster was created with; every other node that
//     is running is seen as a replica of one of them, and every node that
//     is not running is marked fail (so after a Kill, WaitHealthy waits
//     for failure detection and, for a primary, the replica's promotion);
//   - every node whose INFO replication says role:slave has
//     master_link_status:up.
//
// Use it after a kill or restart to wait for the cluster to settle.
func (c *ClusterSet) WaitHealthy(timeout time.Duration) error {
	err := poll(timeout, c.checkHealthy)
	if err != nil {
		return fmt.Errorf("redistest: cluster not healthy: %w", err)
	}
	return nil
}

func (c *ClusterSet) checkHealthy() error {
	var reference []string
	var referenceNode string
	runningCount := 0
	for _, n := range c.nodes {
		if n.Running() {
			runningCount++
		}
	}
	if runningCount == 0 {
		return errors.New("no cluster node is running")
	}
	for _, n := range c.nodes {
		if !n.Running() {
			continue
		}
		v, err := n.Do("CLUSTER", "INFO")
		if err != nil {
			return fmt.Errorf("%s (%s): CLUSTER INFO: %w", n.Name(), n.Addr(), err)
		}
		info := ParseInfo(v)
		for k, want := range map[string]string{
			"cluster_state":          "ok",
			"cluster_slots_assigned": strconv.Itoa(ClusterSlots),
			"cluster_slots_ok":       strconv.Itoa(ClusterSlots),
			"cluster_known_nodes":    strconv.Itoa(len(c.nodes)),
		} {
			if got := info[k]; got != want {
				return fmt.Errorf("%s (%s): %s=%q, want %q", n.Name(), n.Addr(), k, got, want)
			}
		}

		v, err = n.Do("CLUSTER", "NODES")
		if err != nil {
			return fmt.Errorf("%s (%s): CLUSTER NODES: %w", n.Name(), n.Addr(), err)
		}
		view, err := ParseClusterNodes(v)
		if err != nil {
			return err
		}
		prims, err := c.checkView(view, runningCount)
		if err != nil {
			return fmt.Errorf("%s (%s): %w", n.Name(), n.Addr(), err)
		}
		if reference == nil {
			reference, referenceNode = prims, n.Name()
		} else if !slices.Equal(reference, prims) {
			return fmt.Errorf("nodes disagree on primaries: %s sees %v, %s sees %v", referenceNode, reference, n.Name(), prims)
		}

		rep, err := n.Info("replication")
		if err != nil {
			return fmt.Errorf("%s (%s): INFO replication: %w", n.Name(), n.Addr(), err)
		}
		if rep["role"] == "slave" && rep["master_link_status"] != "up" {
			return fmt.Errorf("%s (%s): replica master_link_status=%q", n.Name(), n.Addr(), rep["master_link_status"])
		}
	}
	return nil
}

// checkView checks one node's CLUSTER NODES view: exactly c.primaries
// slot-serving primaries; every other node either marked failed (fail) or a
// replica of one of those primaries; as many live nodes as are running. It
// returns the sorted primary addresses.
func (c *ClusterSet) checkView(view []ClusterNode, running int) ([]string, error) {
	primIDs := make(map[string]bool)
	var prims []string
	for _, cn := range view {
		if cn.HasFlag("master") && !cn.HasFlag("fail") && !cn.HasFlag("fail?") && len(cn.Slots) > 0 {
			primIDs[cn.ID] = true
			prims = append(prims, cn.Addr)
		}
	}
	slices.Sort(prims)
	if len(prims) != c.primaries {
		return nil, fmt.Errorf("sees %d slot-serving primaries %v, want %d", len(prims), prims, c.primaries)
	}
	live := 0
	for _, cn := range view {
		switch {
		case cn.HasFlag("fail"):
			continue
		case cn.HasFlag("fail?"):
			return nil, fmt.Errorf("node %s is suspected down (fail?)", cn.Addr)
		case primIDs[cn.ID]:
		case cn.HasFlag("slave") && primIDs[cn.Master]:
		default:
			return nil, fmt.Errorf("node %s is neither a slot-serving primary nor a replica of one (flags %v)", cn.Addr, cn.Flags)
		}
		live++
	}
	if live != running {
		return nil, fmt.Errorf("sees %d live nodes, but %d are running", live, running)
	}
	return prims, nil
}
