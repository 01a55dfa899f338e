// Command peers measures this service beside its peers on one machine, in
// one run, with the same load shape (package loadgen's closed and open
// loops), and prints ratios per round with each server's CPU time per
// check:
//
//   - Gubernator v2.13.0, single node, through its own gRPC client
//     (GetRateLimits, one rate limit per call), against this service on the
//     memory store through its recommended client (client/grpcclient: the
//     checks of concurrent callers share one CheckStream) and, for
//     reference, one unary Check per call;
//   - envoyproxy/ratelimit on Redis, against this service on Redis (deny
//     cache off), both over Envoy's protocol (one ShouldRateLimit per
//     check) with the same configuration file and 10,000 keys.
//
// scripts/bench-peers.sh installs the pinned peers with `go install` and
// runs it. Every process it starts listens on loopback and is stopped by
// its PID when it ends.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	guber "github.com/gubernator-io/gubernator/v2"

	"github.com/distributedratelimiter/ratelimiter/loadgen"
)

func main() {
	if len(os.Args) == 3 && strings.HasPrefix(os.Args[1], "noop-") {
		if err := noop(os.Args[1], os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "peers:", err)
			os.Exit(1)
		}
		return
	}
	var o opts
	flag.StringVar(&o.bin, "bin", "bench/bin", "directory of the peers' binaries: gubernator, service_cmd (envoyproxy/ratelimit)")
	flag.StringVar(&o.ratelimiter, "ratelimiter", "", "this service's binary")
	flag.IntVar(&o.rounds, "rounds", 3, "rounds; each runs every server, the order alternating")
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "each run's length")
	flag.IntVar(&o.callers, "callers", 64, "closed loop: concurrent callers")
	flag.IntVar(&o.keys, "keys", 10_000, "distinct subjects (keys), round robin")
	flag.StringVar(&o.phase, "phase", "all", "all; peers (Gubernator and envoyproxy/ratelimit only); single (single checks beside the no-op servers only)")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "peers:", err)
		os.Exit(1)
	}
}

type opts struct {
	bin, ratelimiter string
	phase            string
	rounds, callers  int
	keys             int
	duration         time.Duration
}

// Limits high enough that every check is admitted: the cost of a decision,
// not of a denial, is compared.
const (
	perHour = 1_000_000_000
	domain  = "orders"
)

func run(o opts) error {
	dir, err := os.MkdirTemp("", "peers-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var procs procs
	defer func() { procs.stop() }() // the processes started by then

	redisPort := freePort()
	redisPID, err := procs.start("redis", "redis-server", nil, "--port", strconv.Itoa(redisPort), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir)
	if err != nil {
		return err
	}
	redis := "127.0.0.1:" + strconv.Itoa(redisPort)
	if err := waitTCP(redis); err != nil {
		return err
	}

	// envoyproxy/ratelimit's configuration, read by both.
	envoyDir := filepath.Join(dir, "runtime", "ratelimit", "config")
	if err := os.MkdirAll(envoyDir, 0o755); err != nil {
		return err
	}
	envoyConf := fmt.Sprintf("domain: %s\ndescriptors:\n  - key: user\n    rate_limit:\n      unit: hour\n      requests_per_unit: %d\n", domain, perHour)
	if err := os.WriteFile(filepath.Join(envoyDir, "config.yaml"), []byte(envoyConf), 0o644); err != nil {
		return err
	}
	ourConf := filepath.Join(dir, "ours.yaml")
	if err := os.WriteFile(ourConf, []byte(fmt.Sprintf("namespaces:\n  - name: %s\n    limits:\n      - {name: per-hour, algorithm: token_bucket, limit: %d, period: 1h}\n", domain, perHour)), 0o644); err != nil {
		return err
	}

	// Gubernator, one node.
	gGRPC, gHTTP, ml := freeAddr(), freeAddr(), freeAddr() // ml: memberlist, knowing itself only
	gub, err := procs.start("gubernator", filepath.Join(o.bin, "gubernator"), []string{
		"GUBER_GRPC_ADDRESS=" + gGRPC, "GUBER_HTTP_ADDRESS=" + gHTTP, "GUBER_ADVERTISE_ADDRESS=" + gGRPC,
		"GUBER_MEMBERLIST_ADDRESS=" + ml, "GUBER_MEMBERLIST_BIND_ADDRESS=" + ml, "GUBER_MEMBERLIST_KNOWN_NODES=" + ml, "GUBER_PEER_DISCOVERY_TYPE=member-list",
		"GUBER_LOG_LEVEL=error", "OTEL_TRACES_EXPORTER=none"})
	if err != nil {
		return err
	}
	if err := waitHTTP("http://" + gHTTP + "/v1/HealthCheck"); err != nil {
		return fmt.Errorf("gubernator: %w", err)
	}
	// envoyproxy/ratelimit on Redis.
	eGRPC, eHTTP, eDebug := freePort(), freePort(), freePort()
	env, err := procs.start("envoyproxy/ratelimit", filepath.Join(o.bin, "service_cmd"), []string{
		"USE_STATSD=false", "LOG_LEVEL=error", "REDIS_SOCKET_TYPE=tcp", "REDIS_URL=" + redis,
		"RUNTIME_ROOT=" + filepath.Join(dir, "runtime"), "RUNTIME_SUBDIRECTORY=ratelimit", "RUNTIME_WATCH_ROOT=false",
		"HOST=127.0.0.1", "PORT=" + strconv.Itoa(eHTTP), "GRPC_HOST=127.0.0.1", "GRPC_PORT=" + strconv.Itoa(eGRPC),
		"DEBUG_HOST=127.0.0.1", "DEBUG_PORT=" + strconv.Itoa(eDebug)})
	if err != nil {
		return err
	}
	if err := waitHTTP("http://127.0.0.1:" + strconv.Itoa(eHTTP) + "/healthcheck"); err != nil {
		return fmt.Errorf("envoyproxy/ratelimit: %w", err)
	}
	// This service: the memory store (beside Gubernator), Redis with the
	// deny cache off (beside envoyproxy/ratelimit).
	memHTTP, memGRPC, memRLS := freeAddr(), freeAddr(), freeAddr()
	mem, err := procs.start("ratelimiter (memory)", o.ratelimiter, nil, "serve", "--log-level", "error",
		"--config", ourConf, "--listen", memHTTP, "--grpc-listen", memGRPC, "--rls-listen", memRLS)
	if err != nil {
		return err
	}
	// The no-op servers: the transports alone (noop.go).
	self, err := os.Executable()
	if err != nil {
		return err
	}
	noopAddr := map[string]string{}
	noopPID := map[string]int{}
	for _, kind := range []string{"noop-http", "noop-fasthttp", "noop-rls"} {
		noopAddr[kind] = freeAddr()
		if noopPID[kind], err = procs.start(kind, self, nil, kind, noopAddr[kind]); err != nil {
			return err
		}
		if err := waitDial(noopAddr[kind]); err != nil {
			return fmt.Errorf("%s: %w", kind, err)
		}
	}
	rdsHTTP, rdsRLS := freeAddr(), freeAddr()
	rds, err := procs.start("ratelimiter (redis)", o.ratelimiter, nil, "serve", "--log-level", "error",
		"--envoy-config", envoyDir, "--listen", rdsHTTP, "--rls-listen", rdsRLS,
		"--store", "redis", "--redis-addrs", redis, "--deny-cache-size", "0")
	if err != nil {
		return err
	}
	for _, a := range []string{memHTTP, rdsHTTP} {
		if err := waitHTTP("http://" + a + "/readyz"); err != nil {
			return fmt.Errorf("ratelimiter: %w", err)
		}
	}

	gc, err := guber.DialV1Server(gGRPC, nil)
	if err != nil {
		return err
	}
	gubCheck := func(ctx context.Context, subject string) (bool, error) {
		res, err := gc.GetRateLimits(ctx, &guber.GetRateLimitsReq{Requests: []*guber.RateLimitReq{{
			Name: domain, UniqueKey: subject, Hits: 1, Limit: perHour, Duration: 3_600_000, Algorithm: guber.Algorithm_TOKEN_BUCKET}}})
		if err != nil {
			return false, err
		}
		r := res.GetResponses()[0]
		if r.GetError() != "" {
			return false, errors.New(r.GetError())
		}
		return r.GetStatus() == guber.Status_UNDER_LIMIT, nil
	}

	base := loadgen.Config{Namespace: domain, Subjects: o.keys, Callers: o.callers, Duration: o.duration}
	type run struct {
		name  string
		cfg   loadgen.Config
		redis bool // the server's store is the Redis: its CPU per check too
	}
	cfg := func(pid int, mode string, set func(*loadgen.Config)) loadgen.Config {
		c := base
		c.PID, c.Mode = pid, mode
		set(&c)
		return c
	}
	gubRun := run{"gubernator grpc", cfg(gub, "gubernator", func(c *loadgen.Config) { c.Check = gubCheck }), false}
	streamRun := run{"ours stream", cfg(mem, loadgen.ModeStream, func(c *loadgen.Config) { c.GRPC = memGRPC }), false}
	unaryRun := run{"ours grpc unary", cfg(mem, loadgen.ModeGRPC, func(c *loadgen.Config) { c.GRPC = memGRPC }), false}
	envRun := run{"envoyproxy/ratelimit rls", cfg(env, loadgen.ModeRLS, func(c *loadgen.Config) { c.RLS = "127.0.0.1:" + strconv.Itoa(eGRPC) }), true}
	oursRLS := run{"ours redis rls", cfg(rds, loadgen.ModeRLS, func(c *loadgen.Config) { c.RLS = rdsRLS }), true}
	// Single checks: this service (memory store) and the no-op servers.
	single := []run{
		{"ours /v1/check", cfg(mem, loadgen.ModeCheck, func(c *loadgen.Config) { c.URL = "http://" + memHTTP }), false},
		{"no-op net/http", cfg(noopPID["noop-http"], loadgen.ModeCheck, func(c *loadgen.Config) { c.URL = "http://" + noopAddr["noop-http"] }), false},
		{"no-op fasthttp", cfg(noopPID["noop-fasthttp"], loadgen.ModeCheck, func(c *loadgen.Config) { c.URL = "http://" + noopAddr["noop-fasthttp"] }), false},
		{"ours rls (memory)", cfg(mem, loadgen.ModeRLS, func(c *loadgen.Config) { c.RLS = memRLS }), false},
		{"no-op rls (grpc-go)", cfg(noopPID["noop-rls"], loadgen.ModeRLS, func(c *loadgen.Config) { c.RLS = noopAddr["noop-rls"] }), false},
	}

	ctx := context.Background()
	redisCPU := map[string]time.Duration{} // per check, by run
	measure := func(r run) (loadgen.Report, error) {
		before, err := loadgen.ProcessCPU(redisPID)
		if err != nil {
			return loadgen.Report{}, fmt.Errorf("redis CPU: %w", err)
		}
		rep, err := loadgen.Run(ctx, r.cfg)
		if err != nil {
			return rep, fmt.Errorf("%s: %w", r.name, err)
		}
		if rep.Errors > 0 {
			return rep, fmt.Errorf("%s: %d errors, the first: %s", r.name, rep.Errors, rep.FirstError)
		}
		fmt.Printf("  %-30s %8.0f checks/s  p50 %7v  p99 %7v  server CPU %5.1f µs/check", r.name, rep.PerSecond(),
			rep.P50.Round(10*time.Microsecond), rep.P99.Round(10*time.Microsecond), float64(rep.CPUPerCheck())/1e3)
		if r.redis && rep.Checks > 0 {
			after, err := loadgen.ProcessCPU(redisPID)
			if err != nil {
				return rep, fmt.Errorf("redis CPU: %w", err)
			}
			redisCPU[r.name] = (after - before) / time.Duration(rep.Checks)
			fmt.Printf("  Redis CPU %4.1f µs/check", float64(redisCPU[r.name])/1e3)
		}
		fmt.Println()
		return rep, nil
	}
	fmt.Printf("peers, %s, %d callers, %d keys, %v per run, load generator on the same machine\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), o.callers, o.keys, o.duration)
	for round := 1; round <= o.rounds; round++ {
		fmt.Printf("round %d\n", round)
		var order []run
		if o.phase != "single" {
			order = append(order, gubRun, streamRun, unaryRun, envRun, oursRLS)
		}
		if o.phase != "peers" {
			order = append(order, single...)
		}
		if round%2 == 0 {
			slices.Reverse(order)
		}
		reps := map[string]loadgen.Report{}
		for _, r := range order {
			rep, err := measure(r)
			if err != nil {
				return err
			}
			reps[r.name] = rep
		}
		cpu := func(name string) float64 { return float64(reps[name].CPUPerCheck()) }
		if o.phase != "peers" {
			fmt.Printf("  single checks, server CPU per check: ours /v1/check / no-op net/http %.2fx; no-op net/http / no-op fasthttp %.2fx; ours rls / no-op rls %.2fx\n",
				cpu("ours /v1/check")/cpu("no-op net/http"), cpu("no-op net/http")/cpu("no-op fasthttp"), cpu("ours rls (memory)")/cpu("no-op rls (grpc-go)"))
		}
		if o.phase == "single" {
			continue
		}
		// Paced at half Gubernator's capacity of this round: p99 of each.
		half := reps[gubRun.name].PerSecond() / 2
		for _, r := range []run{gubRun, streamRun} {
			r.cfg.Rate, r.cfg.Callers, r.name = half, 4096, r.name+fmt.Sprintf(" paced %.0f/s", half)
			rep, err := measure(r)
			if err != nil {
				return err
			}
			reps[r.name] = rep
		}
		g, s, u := reps[gubRun.name], reps[streamRun.name], reps[unaryRun.name]
		e, ours := reps[envRun.name], reps[oursRLS.name]
		gp := reps[gubRun.name+fmt.Sprintf(" paced %.0f/s", half)]
		sp := reps[streamRun.name+fmt.Sprintf(" paced %.0f/s", half)]
		fmt.Printf("  ratios: ours stream / gubernator %.2fx checks/s (unary / gubernator %.2fx); paced p99 %v vs %v (%.2fx lower)\n",
			s.PerSecond()/g.PerSecond(), u.PerSecond()/g.PerSecond(), sp.P99, gp.P99, float64(gp.P99)/float64(max(sp.P99, 1)))
		fmt.Printf("          ours redis rls / envoyproxy/ratelimit %.2fx checks/s, server CPU per check %.2fx, Redis CPU per check %.2fx\n",
			ours.PerSecond()/e.PerSecond(), float64(ours.CPUPerCheck())/float64(max(e.CPUPerCheck(), 1)),
			float64(redisCPU[oursRLS.name])/float64(max(redisCPU[envRun.name], 1)))
	}
	return nil
}

// keepLogs, when set (PEERS_KEEP_LOGS=1), keeps the servers' logs.
var keepLogs = os.Getenv("PEERS_KEEP_LOGS")

// procs are the processes run started, stopped by their PIDs.
type procs []*exec.Cmd

func (p *procs) start(name, bin string, env []string, args ...string) (int, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := os.CreateTemp("", "peers-"+strings.NewReplacer("/", "-", " ", "-", "(", "", ")", "").Replace(name)+"-*.log")
	if err != nil {
		return 0, err
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %s: %w", name, err)
	}
	*p = append(*p, cmd)
	return cmd.Process.Pid, nil
}

func (p procs) stop() {
	for i := len(p) - 1; i >= 0; i-- {
		p[i].Process.Kill()
		p[i].Wait()
		if f, ok := p[i].Stdout.(*os.File); ok {
			f.Close()
			if keepLogs == "" {
				os.Remove(f.Name())
			}
		}
	}
}

func freePort() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func freeAddr() string { return "127.0.0.1:" + strconv.Itoa(freePort()) }

// waitTCP waits until addr answers Redis's PING.
func waitTCP(addr string) error {
	return poll(func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Second))
		c.Write([]byte("PING\r\n"))
		l, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || !strings.HasPrefix(l, "+PONG") {
			return fmt.Errorf("PING: %q %v", l, err)
		}
		return nil
	})
}

// waitDial waits until addr accepts connections.
func waitDial(addr string) error {
	return poll(func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
}

// waitHTTP waits until url answers 200.
func waitHTTP(url string) error {
	return poll(func() error {
		resp, err := http.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("%s: %d", url, resp.StatusCode)
		}
		return nil
	})
}

// poll retries f every 50 ms for 20 s.
func poll(f func() error) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}
