package main

import (
	"fmt"
	"io"
	"os"

	"github.com/distributedratelimiter/ratelimiter/config"
)

// configCmd runs `ratelimiter config validate FILE`: it prints every problem
// of FILE to stderr and exits 1, or prints "ok: N namespaces" and exits 0.
// A file that cannot be read exits 2.
func configCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) != 2 || args[0] != "validate" {
		fmt.Fprintln(stderr, "Usage: ratelimiter config validate FILE")
		return exitErrors
	}
	path := args[1]
	data, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintf(stderr, "ratelimiter config validate: %v\n", err)
		return exitErrors
	}
	if errs := config.Validate(data, path); len(errs) > 0 {
		for _, e := range errs {
			fmt.Fprintln(stderr, e)
		}
		fmt.Fprintf(stderr, "%s: %d problem(s)\n", path, len(errs))
		return exitFail
	}
	snap, err := config.Parse(data, path)
	if err != nil { // Validate and Parse disagree: report it rather than hide it
		fmt.Fprintln(stderr, err)
		return exitFail
	}
	fmt.Fprintf(stdout, "ok: %d namespaces\n", len(snap.Names()))
	return exitOK
}
