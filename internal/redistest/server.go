package redistest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// InstallHint is appended to the failure message when a Redis binary is
// missing.
const InstallHint = "run scripts/install-redis.sh (as root) to install redis-server and redis-cli"

// Timing knobs shared by every wait in this package.
const (
	// DefaultStartTimeout bounds how long a redis-server may take to answer
	// PING after it was started.
	DefaultStartTimeout = 10 * time.Second
	// pollInterval is the pause between two readiness probes.
	pollInterval = 20 * time.Millisecond
	// probeTimeout bounds one readiness probe (dial, PING, reply).
	probeTimeout = time.Second
	// startAttempts is how many fresh ports a start tries when the port it
	// picked was taken by someone else before redis-server could bind it.
	startAttempts = 5
	// logTailLines is how many log lines are shown when something fails.
	logTailLines = 40
)

// Binary returns the path of the redis-server executable on PATH. When there
// is none it fails the test (t.Fatalf, never t.Skip) and tells how to
// install it. Under -short (the quick lane) it skips the test instead,
// whether or not Redis is installed: see ShortSkip.
func Binary(t testing.TB) string {
	t.Helper()
	return lookBinary(t, "redis-server")
}

// CLIBinary returns the path of the redis-cli executable on PATH, failing the
// test like [Binary] when it is missing. Clusters are created with it.
func CLIBinary(t testing.TB) string {
	t.Helper()
	return lookBinary(t, "redis-cli")
}

// ShortSkip is why a test that starts Redis skips under -short: the quick
// lane of a contributor leaves real processes to the full lane.
const ShortSkip = "starts redis-server: the quick lane (go test -short) leaves it to the full lane, ./scripts/test.sh"

func lookBinary(t testing.TB, name string) string {
	t.Helper()
	if testing.Short() {
		t.Skip(ShortSkip)
	}
	path, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("redistest: %s not found on PATH (%v); tests need a real Redis: %s", name, err, InstallHint)
	}
	return path
}

// Option configures a redis-server started by this package.
type Option func(*options)

type options struct {
	args []string
	name string
	tls  *TLS
}

// TLS is the key material of a server that also listens with TLS
// (WithTLS): its certificate and key (also its client certificate toward
// other nodes), and the authority clients' certificates may chain to.
type TLS struct {
	CertFile, KeyFile, CAFile string
}

// WithTLS makes a data node (and, through Sentinel, each sentinel) listen
// with TLS on a second free port ([Server.TLSAddr]) beside its plain one,
// which this package's own probes keep using. Clients' certificates are
// verified when sent, not required (--tls-auth-clients optional).
// Replication, the sentinels' links and the Cluster bus run over TLS too.
func WithTLS(m TLS) Option {
	return func(o *options) { o.tls = &m }
}

// tlsArgs are a data node's TLS arguments.
func tlsArgs(m *TLS, port int) []string {
	return []string{
		"--tls-port", strconv.Itoa(port),
		"--tls-cert-file", m.CertFile,
		"--tls-key-file", m.KeyFile,
		"--tls-ca-cert-file", m.CAFile,
		"--tls-auth-clients", "optional",
		"--tls-replication", "yes",
	}
}

// WithArgs appends command-line arguments to redis-server, e.g.
// WithArgs("--maxmemory", "10mb", "--maxmemory-policy", "allkeys-lru").
// They come after the package's own arguments and so override them; do not
// override --port, --bind or --dir.
func WithArgs(args ...string) Option {
	return func(o *options) { o.args = append(o.args, args...) }
}

// WithName sets the label used for the server in failure messages and logs
// (default "redis", or a role such as "primary" or "replica-1").
func WithName(name string) Option {
	return func(o *options) { o.name = name }
}

func buildOptions(defaultName string, opts []Option) options {
	o := options{name: defaultName}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// Server is one redis-server (or sentinel) process started by this package
// on 127.0.0.1. Its address and working directory never change, across
// [Server.Stop], [Server.Kill] and [Server.Restart]. Methods are safe for
// concurrent use, except [Server.MustDo], which fails the test.
type Server struct {
	t       testing.TB
	name    string
	bin     string
	dir     string
	logFile string

	// Set once by the first successful start, before the Server is
	// returned; never changed afterwards.
	port    int      // client port
	tlsPort int      // TLS client port (WithTLS), or 0
	args    []string // argv (without the binary) of every (re)start

	mu   sync.Mutex // serializes lifecycle changes; guards proc
	proc *process   // nil when not running
}

// Standalone starts one redis-server on a free 127.0.0.1 port and returns
// once it answers PING. It is stopped in t.Cleanup.
//
// The server runs with --bind 127.0.0.1 --protected-mode no --save ""
// --appendonly no --daemonize no, its own t.TempDir() as --dir and a
// --logfile in that directory. Options may add arguments.
func Standalone(t testing.TB, opts ...Option) *Server {
	t.Helper()
	return startDataNode(t, buildOptions("redis", opts), 1, nil)
}

// baseArgs are the arguments every data node (not sentinels) starts with.
func baseArgs(port int, dir, logFile string) []string {
	return []string{
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--protected-mode", "no",
		"--daemonize", "no",
		"--save", "",
		"--appendonly", "no",
		"--dir", dir,
		"--logfile", logFile,
		// Replicas sync without the default 5s wait for more replicas.
		"--repl-diskless-sync-delay", "0",
	}
}

// startDataNode starts a redis-server (not a sentinel) on nports fresh free
// ports. Its argv is the base arguments, then extra(ports) (may be nil),
// then the user's WithArgs.
func startDataNode(t testing.TB, o options, nports int, extra func(s *Server, ports []int) []string) *Server {
	t.Helper()
	if o.tls != nil {
		nports++ // the last one
	}
	return startWith(t, o, nports, func(s *Server, ports []int) ([]string, error) {
		args := baseArgs(ports[0], s.dir, s.logFile)
		if o.tls != nil {
			s.tlsPort = ports[len(ports)-1] // s is not shared until returned
			args = append(args, tlsArgs(o.tls, s.tlsPort)...)
		}
		if extra != nil {
			args = append(args, extra(s, ports)...)
		}
		return append(args, o.args...), nil
	})
}

// startWith is the common start path: it creates the Server, registers its
// cleanup before the first process exists, then tries up to startAttempts
// sets of nports fresh free ports (ports[0] is the client port), building
// the argv for each with argv. A start that fails for any reason other than
// a port collision fails the test at once.
func startWith(t testing.TB, o options, nports int, argv func(s *Server, ports []int) ([]string, error)) *Server {
	t.Helper()
	bin := Binary(t)
	dir := t.TempDir()
	s := &Server{
		t:       t,
		name:    o.name,
		bin:     bin,
		dir:     dir,
		logFile: filepath.Join(dir, "redis.log"),
	}
	t.Cleanup(s.cleanup)

	var lastErr error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		ports, err := freePorts(nports)
		if err != nil {
			t.Fatalf("redistest: %s: %v", s.name, err)
		}
		args, err := argv(s, ports)
		if err != nil {
			t.Fatalf("redistest: %s: %v", s.name, err)
		}
		s.mu.Lock()
		err = s.startLocked(ports[0], args)
		if err == nil {
			// Written once, before s is shared; read without the lock.
			s.port, s.args = ports[0], args
		}
		s.mu.Unlock()
		if err == nil {
			return s
		}
		lastErr = err
		if !errors.Is(err, errPortInUse) {
			break
		}
		first, _, _ := strings.Cut(err.Error(), "\n")
		t.Logf("redistest: %s: port collision on attempt %d, retrying on a new port: %s", s.name, attempt, first)
	}
	t.Fatalf("redistest: start %s: %v", s.name, lastErr)
	return nil
}

// errPortInUse marks a start that failed because a port was already bound.
var errPortInUse = errors.New("port already in use")

// startLocked starts the process with args on port and waits until it
// answers PING. On failure nothing is left running. s.mu must be held.
func (s *Server) startLocked(port int, args []string) error {
	if s.proc != nil && !s.proc.exited() {
		return fmt.Errorf("%s is already running (pid %d)", s.name, s.proc.cmd.Process.Pid)
	}
	logStart, outStart := fileSize(s.logFile), fileSize(s.outFile())
	p, err := startProcess(s.bin, s.dir, s.outFile(), args)
	if err != nil {
		return err
	}
	s.proc = p
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if err := waitReady(p, addr, DefaultStartTimeout); err != nil {
		// Never leave a half-started process behind.
		if kerr := p.kill(); kerr != nil {
			err = fmt.Errorf("%w (and stopping it: %v)", err, kerr)
		}
		// Only what this attempt wrote tells whether it hit a taken port.
		if strings.Contains(readFrom(s.logFile, logStart)+readFrom(s.outFile(), outStart), "Address already in use") {
			err = fmt.Errorf("%w: %w", errPortInUse, err)
		}
		return fmt.Errorf("%w\n--- %s log tail ---\n%s", err, s.name, s.logTail())
	}
	return nil
}

// waitReady polls addr with PING every pollInterval until it answers +PONG,
// the process exits, or timeout passes.
func waitReady(p *process, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var lastErr error
	for {
		if p.exited() {
			return fmt.Errorf("redis-server pid %d exited before answering PING: %v", p.cmd.Process.Pid, p.err)
		}
		v, err := doRaw(addr, probeTimeout, "PING")
		if err == nil && v == "PONG" {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("PING answered %q", v)
		}
		lastErr = err
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server pid %d on %s did not answer PING within %v: %w", p.cmd.Process.Pid, addr, timeout, lastErr)
		}
		if p.waitExit(pollInterval) {
			continue // reported at the top of the loop
		}
	}
}

// freePorts returns n distinct ports that were free on 127.0.0.1 a moment
// ago. All listeners are held until every port is picked, so the kernel
// cannot hand out the same port twice.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	lns := make([]net.Listener, 0, n)
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("pick a free port: %w", err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Addr returns the server's address, "127.0.0.1:PORT". It stays the same
// across Stop, Kill and Restart.
func (s *Server) Addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
}

// Port returns the server's TCP port.
func (s *Server) Port() int { return s.port }

// TLSAddr returns the address of the server's TLS port, "127.0.0.1:PORT"
// (WithTLS), or "" without one.
func (s *Server) TLSAddr() string {
	if s.tlsPort == 0 {
		return ""
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.tlsPort))
}

// clientPort is the port other nodes reach s on: its TLS port when it has
// one (replication and sentinels then speak TLS), its plain one otherwise.
func (s *Server) clientPort() int {
	if s.tlsPort != 0 {
		return s.tlsPort
	}
	return s.port
}

// Dir returns the server's working directory (a t.TempDir()).
func (s *Server) Dir() string { return s.dir }

// LogFile returns the path of the server's log file.
func (s *Server) LogFile() string { return s.logFile }

// Name returns the server's label ("redis", "primary", "replica-1",
// "sentinel-2", "node-4", ...).
func (s *Server) Name() string { return s.name }

// PID returns the process ID of the running process, or 0 when the server is
// not running (stopped, killed, or exited on its own).
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil || s.proc.exited() {
		return 0
	}
	return s.proc.cmd.Process.Pid
}

// Running reports whether the process is alive.
func (s *Server) Running() bool { return s.PID() != 0 }

// Kill sends SIGKILL to the process and waits until it is gone: a crash, for
// fault-injection tests. Killing a server that is not running is a no-op.
func (s *Server) Kill() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return nil
	}
	if err := s.proc.kill(); err != nil {
		return fmt.Errorf("redistest: kill %s: %w", s.name, err)
	}
	return nil
}

// Stop shuts the server down gracefully: SIGTERM, and SIGKILL if it is still
// running after 3s. It returns once the process is gone. Stopping a server
// that is not running is a no-op.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopLocked()
}

func (s *Server) stopLocked() error {
	if s.proc == nil {
		return nil
	}
	if err := s.proc.terminate(); err != nil {
		return fmt.Errorf("redistest: stop %s: %w", s.name, err)
	}
	return nil
}

// Restart stops the server if it is running (as Stop does) and starts it
// again with the same arguments, on the same port, in the same directory
// (so a cluster node keeps its nodes.conf and a sentinel its rewritten
// config), and returns once it answers PING. If the port is briefly
// unavailable the start is retried until the start timeout.
func (s *Server) Restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.stopLocked(); err != nil {
		return err
	}
	deadline := time.Now().Add(DefaultStartTimeout)
	for {
		err := s.startLocked(s.port, s.args)
		if err == nil {
			return nil
		}
		if !errors.Is(err, errPortInUse) || time.Now().After(deadline) {
			return fmt.Errorf("redistest: restart %s on %s: %w", s.name, s.Addr(), err)
		}
		time.Sleep(pollInterval)
	}
}

// Do sends one command to the server over a fresh connection and returns the
// flattened reply; see the package-level [Do] for the reply format.
func (s *Server) Do(args ...string) (string, error) {
	return Do(s.Addr(), args...)
}

// MustDo is Do that fails the test (t.Fatalf) on any error, including a nil
// reply. Call it only from the test's goroutine.
func (s *Server) MustDo(args ...string) string {
	s.t.Helper()
	v, err := s.Do(args...)
	if err != nil {
		s.t.Fatalf("redistest: %s: %s: %v", s.name, strings.Join(args, " "), err)
	}
	return v
}

// Info runs INFO with the given sections and returns the fields as parsed
// by [ParseInfo].
func (s *Server) Info(sections ...string) (map[string]string, error) {
	v, err := s.Do(append([]string{"INFO"}, sections...)...)
	if err != nil {
		return nil, err
	}
	return ParseInfo(v), nil
}

// cleanup stops the process (the function is registered with t.Cleanup
// before the process first starts) and, when the test failed, logs the tail
// of the server's log.
func (s *Server) cleanup() {
	s.mu.Lock()
	p := s.proc
	var unexpected error
	if p != nil && p.exited() && p.err != nil && !isSignalExit(p.err) {
		unexpected = p.err
	}
	err := s.stopLocked()
	s.mu.Unlock()
	if err != nil {
		s.t.Errorf("%v", err)
	}
	if unexpected != nil {
		s.t.Logf("redistest: %s (%s) had exited on its own: %v", s.name, s.Addr(), unexpected)
	}
	if s.t.Failed() {
		s.t.Logf("redistest: %s (%s) log tail:\n%s", s.name, s.Addr(), s.logTail())
	}
}

// isSignalExit reports whether err is an exit caused by a signal (our own
// Kill, or SIGTERM shutdown).
func isSignalExit(err error) bool {
	var ee *exec.ExitError
	return errors.As(err, &ee) && ee.ExitCode() == -1
}

// outFile is where the process's stdout and stderr go (errors from before
// the log file is configured, e.g. a bad argument).
func (s *Server) outFile() string { return filepath.Join(s.dir, "stdout.log") }

// logTail returns the last logTailLines lines of the log file, followed by
// the last lines the process wrote to stdout/stderr.
func (s *Server) logTail() string {
	var b strings.Builder
	if data, err := os.ReadFile(s.logFile); err == nil {
		b.WriteString(lastLines(string(data), logTailLines))
	} else {
		fmt.Fprintf(&b, "(no log file: %v)\n", err)
	}
	if out, err := os.ReadFile(s.outFile()); err == nil && len(out) > 0 {
		b.WriteString("--- stdout/stderr ---\n")
		b.WriteString(lastLines(string(out), logTailLines))
	}
	return b.String()
}

// fileSize returns the size of the file at path, 0 if it does not exist.
func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// readFrom returns the content of the file at path from offset on, "" on
// any error.
func readFrom(path string, offset int64) string {
	data, err := os.ReadFile(path)
	if err != nil || offset > int64(len(data)) {
		return ""
	}
	return string(data[offset:])
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n") + "\n"
}
