package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/distributedratelimiter/ratelimiter/loadgen"
)

// benchCmd drives a running server with checks and prints what it measured
// (package loadgen). Exit code: 0, or 2 on a usage error or a failed run.
func benchCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("bench", "bench [--server URL | --grpc ADDR | --rls ADDR] [--mode check|checks|grpc|stream|rls] [--callers N] [--rate R] [--duration D] [--subjects N] [--pid PID]", stderr)
	var cfg loadgen.Config
	fs.StringVar(&cfg.URL, "server", "http://127.0.0.1:8080", "base `URL` of the server")
	fs.StringVar(&cfg.GRPC, "grpc", "127.0.0.1:8081", "`address` of the native gRPC API (--grpc-listen), for the grpc and stream modes")
	fs.StringVar(&cfg.RLS, "rls", "127.0.0.1:8082", "`address` of Envoy's rate limit service (--rls-listen, or envoyproxy/ratelimit's), for the rls mode")
	fs.StringVar(&cfg.RLSKey, "rls-key", "user", "rls mode: the descriptor `key` whose value is the subject")
	fs.StringVar(&cfg.Mode, "mode", loadgen.ModeCheck, "check: one check per POST /v1/check; checks: the batching Go client over POST /v1/checks; grpc: one unary Check each; stream: every caller on one CheckStream; rls: one ShouldRateLimit each, Envoy's protocol (domain: the namespace)")
	fs.StringVar(&cfg.Namespace, "namespace", "orders", "namespace to check")
	fs.IntVar(&cfg.Subjects, "subjects", 10_000, "distinct subjects, round robin (1: one hot subject)")
	fs.IntVar(&cfg.Callers, "callers", 64, "closed loop: concurrent callers; open loop: the most checks outstanding")
	fs.Float64Var(&cfg.Rate, "rate", 0, "open loop: checks a second, latency measured from each check's due instant; 0 runs a closed loop")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "how long to run")
	fs.IntVar(&cfg.PID, "pid", 0, "the server's process id, to report its CPU time per check (Linux /proc)")
	quiet := fs.Bool("quiet", false, "no progress line a second")
	if err := parseFlags(fs, args); err != nil {
		return flagExit(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintln(stderr, "ratelimiter bench: unexpected arguments", fs.Args())
		return exitErrors
	}
	if !*quiet {
		cfg.Progress = stderr
	}
	r, err := loadgen.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "ratelimiter bench:", err)
		return exitErrors
	}
	fmt.Fprint(stdout, r)
	return exitOK
}
