// Command ratelimiter runs the rate limiting service and talks to it.
//
// Usage:
//
//	ratelimiter serve [--config FILE] [--listen ADDR] [--store memory] [--max-keys N]
//	ratelimiter check --server URL --namespace NS --subject S [--cost N]
//	ratelimiter bench [--server URL] [--mode check|checks] [--callers N] [--rate R] [--pid PID]
//	ratelimiter config validate FILE
//	ratelimiter version
//
// Every flag may also be given as an environment variable RATELIMITER_<FLAG>,
// upper case with '-' as '_' (RATELIMITER_LISTEN, RATELIMITER_MAX_KEYS); a
// flag on the command line wins over the environment.
//
// serve logs one line with msg "listening" and the bound address in "addr"
// once its listener is open, so a caller that starts it with
// --listen 127.0.0.1:0 reads the chosen port from the log (the end-to-end test
// does). SIGTERM or SIGINT shut it down gracefully; SIGHUP reloads --config
// (which is also watched for changes). The admin API for runtime per-subject
// overrides is on when RATELIMITER_ADMIN_TOKEN or --admin-token-file is set;
// see docs/CONFIGURATION.md.
//
// This package is wiring only: flags, construction, signals and output. The
// behaviour lives in the packages it assembles.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Exit codes.
const (
	exitOK     = 0
	exitFail   = 1 // denied (check), invalid configuration, server failure
	exitErrors = 2 // usage, I/O and other errors
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes the subcommand named by args[0] and returns the exit code.
// ctx is cancelled on SIGINT or SIGTERM.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitErrors
	}
	switch args[0] {
	case "serve":
		return serveCmd(ctx, args[1:], stderr)
	case "check":
		return checkCmd(ctx, args[1:], stdout, stderr)
	case "bench":
		return benchCmd(ctx, args[1:], stdout, stderr)
	case "config":
		return configCmd(args[1:], stdout, stderr)
	case "version", "--version", "-version":
		return versionCmd(stdout)
	case "help", "-h", "--help", "-help":
		usage(stdout)
		return exitOK
	}
	fmt.Fprintf(stderr, "ratelimiter: unknown command %q\n\n", args[0])
	usage(stderr)
	return exitErrors
}

func usage(w io.Writer) {
	fmt.Fprint(w, `Usage:
  ratelimiter serve [--config FILE] [--listen ADDR] [--store memory] [--max-keys N]
  ratelimiter check [--server URL] --namespace NS --subject S [--cost N]
  ratelimiter bench [--server URL] [--mode check|checks] [--callers N] [--rate R] [--pid PID]
  ratelimiter config validate FILE
  ratelimiter version

Run "ratelimiter COMMAND -h" for the flags of a command. Every flag can be set
from the environment as RATELIMITER_<FLAG> (e.g. RATELIMITER_LISTEN).
`)
}
