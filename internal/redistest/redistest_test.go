package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// waitFor polls cond every 20ms until it is true or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %s", timeout, what, detail)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestBinary(t *testing.T) {
	t.Parallel()
	bin := Binary(t)
	st, err := os.Stat(bin)
	if err != nil {
		t.Fatalf("stat %s: %v", bin, err)
	}
	if st.Mode()&0o111 == 0 {
		t.Fatalf("%s is not executable", bin)
	}
	if CLIBinary(t) == "" {
		t.Fatal("CLIBinary returned empty path")
	}
}

// fatalRecorder is a testing.TB whose Fatalf records the message and stops
// the calling function, so the failure path of Binary can be tested.
type fatalRecorder struct {
	testing.TB
	msg string
}

type fatalStop struct{}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	panic(fatalStop{})
}

func TestBinaryMissingFailsWithInstallHint(t *testing.T) {
	// Not parallel: t.Setenv changes PATH for the whole process.
	t.Setenv("PATH", t.TempDir())
	rec := &fatalRecorder{TB: t}
	func() {
		defer func() {
			if r := recover(); r != nil {
				if _, ok := r.(fatalStop); !ok {
					panic(r)
				}
			}
		}()
		Binary(rec)
		t.Error("Binary returned although redis-server is not on PATH")
	}()
	if !strings.Contains(rec.msg, "redis-server not found") || !strings.Contains(rec.msg, "scripts/install-redis.sh") {
		t.Fatalf("failure message %q does not name the binary and the install script", rec.msg)
	}
}

func TestStandaloneSetGetAndReplyTypes(t *testing.T) {
	t.Parallel()
	s := Standalone(t)

	if host, _, err := net.SplitHostPort(s.Addr()); err != nil || host != "127.0.0.1" {
		t.Fatalf("Addr() = %q, want 127.0.0.1:PORT (err %v)", s.Addr(), err)
	}
	if s.PID() <= 0 {
		t.Fatalf("PID() = %d for a running server", s.PID())
	}

	if got := s.MustDo("SET", "greeting", "hello world\r\nwith CRLF"); got != "OK" {
		t.Fatalf("SET = %q, want OK", got)
	}
	if got := s.MustDo("GET", "greeting"); got != "hello world\r\nwith CRLF" {
		t.Fatalf("GET = %q", got)
	}
	if got := s.MustDo("INCRBY", "counter", "41"); got != "41" {
		t.Fatalf("INCRBY = %q, want 41", got)
	}
	if _, err := s.Do("GET", "missing"); !errors.Is(err, ErrNil) {
		t.Fatalf("GET missing: err = %v, want ErrNil", err)
	}
	_, err := s.Do("NOSUCHCOMMAND")
	var re *ReplyError
	if !errors.As(err, &re) || !strings.HasPrefix(re.Msg, "ERR unknown command") {
		t.Fatalf("unknown command: err = %v, want ReplyError ERR unknown command", err)
	}
	s.MustDo("RPUSH", "list", "a", "", "c")
	if got := s.MustDo("LRANGE", "list", "0", "-1"); got != "a\n\nc" {
		t.Fatalf("LRANGE = %q, want %q", got, "a\n\nc")
	}
	if got := s.MustDo("MGET", "greeting-missing", "counter"); got != "\n41" {
		t.Fatalf("MGET with nil element = %q, want %q", got, "\n41")
	}

	// The contract: loopback only, no persistence, no protected mode.
	for param, want := range map[string]string{
		"bind":           "127.0.0.1",
		"save":           "",
		"appendonly":     "no",
		"protected-mode": "no",
		"dir":            s.Dir(),
	} {
		if got := s.MustDo("CONFIG", "GET", param); got != param+"\n"+want {
			t.Errorf("CONFIG GET %s = %q, want %q", param, got, param+"\n"+want)
		}
	}

	info, err := s.Info("server")
	if err != nil {
		t.Fatal(err)
	}
	if info["process_id"] != strconv.Itoa(s.PID()) {
		t.Fatalf("INFO process_id = %q, PID() = %d", info["process_id"], s.PID())
	}
	if info["tcp_port"] != strconv.Itoa(s.Port()) {
		t.Fatalf("INFO tcp_port = %q, Port() = %d", info["tcp_port"], s.Port())
	}
	if _, err := os.Stat(s.LogFile()); err != nil {
		t.Fatalf("log file: %v", err)
	}
}

func TestWithArgs(t *testing.T) {
	t.Parallel()
	s := Standalone(t, WithArgs("--maxmemory", "10mb", "--maxmemory-policy", "allkeys-lru"), WithName("lru"))
	if got := s.MustDo("CONFIG", "GET", "maxmemory"); got != "maxmemory\n10485760" {
		t.Fatalf("CONFIG GET maxmemory = %q", got)
	}
	if got := s.MustDo("CONFIG", "GET", "maxmemory-policy"); got != "maxmemory-policy\nallkeys-lru" {
		t.Fatalf("CONFIG GET maxmemory-policy = %q", got)
	}
	if s.Name() != "lru" {
		t.Fatalf("Name() = %q", s.Name())
	}
}

func TestStandaloneRestartKeepsAddress(t *testing.T) {
	t.Parallel()
	s := Standalone(t)
	addr, pid := s.Addr(), s.PID()
	s.MustDo("SET", "k", "v")

	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	if s.Addr() != addr {
		t.Fatalf("address changed across Restart: %s -> %s", addr, s.Addr())
	}
	if s.PID() == pid || s.PID() == 0 {
		t.Fatalf("PID after Restart = %d, before %d: want a new running process", s.PID(), pid)
	}
	if got := s.MustDo("PING"); got != "PONG" {
		t.Fatalf("PING after Restart = %q", got)
	}
	// No persistence: a restarted server starts empty.
	if _, err := s.Do("GET", "k"); !errors.Is(err, ErrNil) {
		t.Fatalf("GET after Restart: err = %v, want ErrNil (no persistence)", err)
	}
	if got := s.MustDo("CONFIG", "GET", "dir"); got != "dir\n"+s.Dir() {
		t.Fatalf("dir after Restart = %q, want %q", got, s.Dir())
	}
}

func TestStandaloneKillRefusesThenRestarts(t *testing.T) {
	t.Parallel()
	s := Standalone(t)
	pid := s.PID()

	if err := s.Kill(); err != nil {
		t.Fatal(err)
	}
	if s.PID() != 0 || s.Running() {
		t.Fatalf("PID() = %d after Kill, want 0", s.PID())
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("process %d still exists after Kill (kill -0: %v)", pid, err)
	}
	conn, err := net.DialTimeout("tcp", s.Addr(), time.Second)
	if err == nil {
		conn.Close()
		t.Fatalf("dial %s succeeded after Kill", s.Addr())
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial after Kill: %v, want connection refused", err)
	}
	if _, err := s.Do("PING"); err == nil {
		t.Fatal("Do(PING) succeeded after Kill")
	}
	// Kill and Stop of a dead server are no-ops.
	if err := s.Kill(); err != nil {
		t.Fatalf("second Kill: %v", err)
	}
	if err := s.Stop(); err != nil {
		t.Fatalf("Stop after Kill: %v", err)
	}

	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	if got := s.MustDo("PING"); got != "PONG" {
		t.Fatalf("PING after Restart = %q", got)
	}
}

func TestCleanupStopsProcess(t *testing.T) {
	t.Parallel()
	var pids []int
	t.Run("inner", func(t *testing.T) {
		pids = append(pids, Standalone(t).PID())
		r := Replicated(t, 1)
		pids = append(pids, r.Primary().PID(), r.Replicas()[0].PID())
	})
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("process %d still exists after the test's cleanup (kill -0: %v)", pid, err)
		}
	}
}

func TestFreePortsDistinct(t *testing.T) {
	t.Parallel()
	ports, err := freePorts(20)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p <= 0 || seen[p] {
			t.Fatalf("bad or duplicate port %d in %v", p, ports)
		}
		seen[p] = true
	}
}

func TestReadReplyNestedError(t *testing.T) {
	t.Parallel()
	// A MULTI/EXEC reply may carry an error inside the array.
	r := bufio.NewReader(strings.NewReader("*2\r\n+OK\r\n-WRONGTYPE bad\r\n"))
	v, err := readReply(r)
	if err != nil {
		t.Fatal(err)
	}
	_, err = flatten(v)
	var re *ReplyError
	if !errors.As(err, &re) || re.Msg != "WRONGTYPE bad" {
		t.Fatalf("flatten: err = %v, want ReplyError WRONGTYPE bad", err)
	}
	if _, err := readReply(bufio.NewReader(strings.NewReader("$5\r\nabc\r\n"))); err == nil {
		t.Fatal("short bulk string accepted")
	}
}

func TestReplicated(t *testing.T) {
	t.Parallel()
	r := Replicated(t, 2)
	if len(r.Replicas()) != 2 {
		t.Fatalf("%d replicas, want 2", len(r.Replicas()))
	}
	r.Primary().MustDo("SET", "replicated-key", "42")
	for _, rep := range r.Replicas() {
		waitFor(t, 5*time.Second, "key on "+rep.Name(), func() (bool, string) {
			v, err := rep.Do("GET", "replicated-key")
			return err == nil && v == "42", "GET = " + v
		})
		info, err := rep.Info("replication")
		if err != nil {
			t.Fatal(err)
		}
		if info["role"] != "slave" || info["master_port"] != strconv.Itoa(r.Primary().Port()) {
			t.Fatalf("%s: role=%s master_port=%s", rep.Name(), info["role"], info["master_port"])
		}
		_, err = rep.Do("SET", "x", "1")
		var re *ReplyError
		if !errors.As(err, &re) || !strings.HasPrefix(re.Msg, "READONLY") {
			t.Fatalf("write to replica: err = %v, want READONLY", err)
		}
	}
	info, err := r.Primary().Info("replication")
	if err != nil {
		t.Fatal(err)
	}
	if info["connected_slaves"] != "2" {
		t.Fatalf("primary connected_slaves = %q, want 2", info["connected_slaves"])
	}
}

func TestSentinelAndFailover(t *testing.T) {
	t.Parallel()
	s := Sentinel(t, "mymaster")
	if s.MasterName() != "mymaster" {
		t.Fatalf("MasterName() = %q", s.MasterName())
	}
	if len(s.SentinelAddrs()) != 3 || len(s.Replicas()) != 1 {
		t.Fatalf("%d sentinels, %d replicas; want 3 and 1", len(s.SentinelAddrs()), len(s.Replicas()))
	}
	for _, sn := range s.Sentinels() {
		got, err := sn.Do("SENTINEL", "get-master-addr-by-name", "mymaster")
		if err != nil {
			t.Fatal(err)
		}
		if want := "127.0.0.1\n" + strconv.Itoa(s.Primary().Port()); got != want {
			t.Fatalf("%s get-master-addr-by-name = %q, want %q", sn.Name(), got, want)
		}
	}
	addr, err := s.MasterAddr()
	if err != nil {
		t.Fatal(err)
	}
	if addr != s.Primary().Addr() {
		t.Fatalf("MasterAddr() = %s, want %s", addr, s.Primary().Addr())
	}
	if err := s.WaitMaster(s.Primary().Addr(), time.Second); err != nil {
		t.Fatal(err)
	}

	// Failover: kill the primary, the sentinels must promote the replica.
	old := s.Primary()
	old.MustDo("SET", "before-failover", "1")
	waitFor(t, 5*time.Second, "write to reach the replica", func() (bool, string) {
		v, err := s.Replicas()[0].Do("GET", "before-failover")
		return err == nil && v == "1", fmt.Sprint(v, err)
	})
	if err := old.Kill(); err != nil {
		t.Fatal(err)
	}
	newAddr, err := s.WaitFailover(old.Addr(), 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if newAddr != s.Replicas()[0].Addr() {
		t.Fatalf("new master %s, want the replica %s", newAddr, s.Replicas()[0].Addr())
	}
	cur, err := s.CurrentPrimary()
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "promoted replica to accept writes", func() (bool, string) {
		v, err := cur.Do("SET", "after-failover", "1")
		return err == nil && v == "OK", fmt.Sprint(v, err)
	})
	if got := cur.MustDo("GET", "before-failover"); got != "1" {
		t.Fatalf("GET before-failover on new master = %q", got)
	}

	// A restarted sentinel keeps the config it rewrote after the failover.
	sn := s.Sentinels()[0]
	if err := sn.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitMaster(newAddr, 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestCluster3x0(t *testing.T) {
	t.Parallel()
	c := Cluster(t, 3, 0)
	if len(c.Nodes()) != 3 || len(c.Addrs()) != 3 {
		t.Fatalf("%d nodes, want 3", len(c.Nodes()))
	}
	for _, n := range c.Nodes() {
		info := ParseInfo(n.MustDo("CLUSTER", "INFO"))
		if info["cluster_state"] != "ok" || info["cluster_slots_assigned"] != "16384" {
			t.Fatalf("%s: cluster_state=%s cluster_slots_assigned=%s", n.Name(), info["cluster_state"], info["cluster_slots_assigned"])
		}
	}
	prims, err := c.Primaries()
	if err != nil {
		t.Fatal(err)
	}
	if len(prims) != 3 {
		t.Fatalf("%d primaries, want 3", len(prims))
	}
	// Keys land on the node owning their slot, following MOVED.
	for i := range 20 {
		key := "key-" + strconv.Itoa(i)
		clusterDo(t, c, "SET", key, strconv.Itoa(i))
		if got := clusterDo(t, c, "GET", key); got != strconv.Itoa(i) {
			t.Fatalf("GET %s = %q", key, got)
		}
	}
}

func TestCluster3x1AndFailover(t *testing.T) {
	t.Parallel()
	c := Cluster(t, 3, 1)
	if len(c.Nodes()) != 6 {
		t.Fatalf("%d nodes, want 6", len(c.Nodes()))
	}
	prims, err := c.Primaries()
	if err != nil {
		t.Fatal(err)
	}
	reps, err := c.Replicas()
	if err != nil {
		t.Fatal(err)
	}
	if len(prims) != 3 || len(reps) != 3 {
		t.Fatalf("%d primaries and %d replicas, want 3 and 3", len(prims), len(reps))
	}
	info := ParseInfo(c.Nodes()[0].MustDo("CLUSTER", "INFO"))
	if info["cluster_known_nodes"] != "6" || info["cluster_size"] != "3" {
		t.Fatalf("cluster_known_nodes=%s cluster_size=%s, want 6 and 3", info["cluster_known_nodes"], info["cluster_size"])
	}

	// Kill a primary: its replica must take over and the cluster settle.
	victim := prims[0]
	if err := victim.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitHealthy(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	after, err := c.Primaries()
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != 3 {
		t.Fatalf("%d primaries after failover, want 3", len(after))
	}
	for _, p := range after {
		if p == victim {
			t.Fatalf("killed node %s still listed as primary", victim.Addr())
		}
	}
	clusterDo(t, c, "SET", "after-failover", "ok")
}

// clusterDo runs a keyed command on the cluster, following MOVED redirects.
func clusterDo(t *testing.T, c *ClusterSet, args ...string) string {
	t.Helper()
	addr := ""
	for _, n := range c.Nodes() {
		if n.Running() {
			addr = n.Addr()
			break
		}
	}
	for range 5 {
		v, err := Do(addr, args...)
		var re *ReplyError
		if errors.As(err, &re) && strings.HasPrefix(re.Msg, "MOVED ") {
			f := strings.Fields(re.Msg)
			addr = f[len(f)-1]
			continue
		}
		if err != nil {
			t.Fatalf("%s on %s: %v", strings.Join(args, " "), addr, err)
		}
		return v
	}
	t.Fatalf("%s: too many redirects", strings.Join(args, " "))
	return ""
}

func TestStartRetriesOnPortCollision(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	taken := ln.Addr().(*net.TCPAddr).Port

	// The first attempt is made to collide with a port that is in use, as if
	// another process had grabbed the picked port in the meantime.
	attempts := 0
	s := startWith(t, buildOptions("collide", nil), 1, func(s *Server, ports []int) ([]string, error) {
		attempts++
		port := ports[0]
		if attempts == 1 {
			port = taken
		}
		return baseArgs(port, s.dir, s.logFile), nil
	})
	if attempts != 2 {
		t.Fatalf("%d start attempts, want 2", attempts)
	}
	if s.Port() == taken {
		t.Fatalf("server reports the taken port %d", taken)
	}
	if got := s.MustDo("PING"); got != "PONG" {
		t.Fatalf("PING = %q", got)
	}
}

func TestConcurrentLifecycleAndDo(t *testing.T) {
	t.Parallel()
	s := Standalone(t)
	done := make(chan error, 1)
	go func() {
		for range 2 {
			if err := s.Restart(); err != nil {
				done <- err
				return
			}
		}
		done <- s.Kill()
	}()
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			if s.Running() {
				t.Fatal("server still running after Kill")
			}
			return
		default:
		}
		_ = s.Addr()
		_ = s.PID()
		_, _ = s.Do("PING") // may fail while restarting; must not race
	}
}
