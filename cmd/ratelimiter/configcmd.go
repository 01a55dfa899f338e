package main

import (
	"fmt"
	"io"
	"os"

	"github.com/distributedratelimiter/ratelimiter/config"
)

// configCmd runs `ratelimiter config validate FILE` (our configuration)
// or `ratelimiter config validate --envoy PATH` (envoyproxy/ratelimit's: a
// file, or a directory of them): it prints every problem to stderr, each
// at its file and line, and exits 1, or prints "ok: N namespaces" (or
// domains) and exits 0. A path that cannot be read exits 2.
func configCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 3 && args[0] == "validate" && args[1] == "--envoy" {
		return validateEnvoy(args[2], stdout, stderr)
	}
	if len(args) != 2 || args[0] != "validate" {
		fmt.Fprintln(stderr, "Usage: ratelimiter config validate FILE\n       ratelimiter config validate --envoy PATH")
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

func validateEnvoy(path string, stdout, stderr io.Writer) int {
	names, contents, err := config.EnvoyData(path)
	if err != nil {
		fmt.Fprintf(stderr, "ratelimiter config validate: %v\n", err)
		return exitErrors
	}
	if len(names) == 0 {
		fmt.Fprintf(stderr, "%s: no *.yaml or *.yml file\n", path)
		return exitFail
	}
	if errs := config.ValidateEnvoy(names, contents, config.EnvoyOptions{}); len(errs) > 0 {
		for _, e := range errs {
			fmt.Fprintln(stderr, e)
		}
		fmt.Fprintf(stderr, "%s: %d problem(s)\n", path, len(errs))
		return exitFail
	}
	nss, err := config.ParseEnvoy(names, contents, config.EnvoyOptions{})
	if err != nil { // bounds of the limits (policy)
		fmt.Fprintln(stderr, err)
		return exitFail
	}
	fmt.Fprintf(stdout, "ok: %d domains\n", len(nss))
	return exitOK
}
