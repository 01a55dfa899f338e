// Package chaostest holds the fault-injection tests of the rate limiter: a
// Redis primary killed by PID under steady load (Redis Cluster with replicas,
// and Sentinel), and latency, connection resets and a black hole injected
// between the service and Redis by a TCP fault proxy (toxiproxy, as a
// library, on loopback).
//
// Each test runs several in-process instances (a redisstore client, a
// heartbeat and a guarded service.Service each) against real redis-server
// processes started by internal/redistest, drives them with a paced load
// for a bounded time, and measures, from every check it made:
//
//   - the latency of every check against the maximum wait for the store;
//   - which path decided (store, deny cache, local, open, closed, shed),
//     that a slow Redis still decides, and that decisions return to the
//     store after the fault;
//   - the over-admission the fault caused: the admitted count of each
//     subject minus what an exact limiter would have admitted for the same
//     requests at the same instants (package limit replayed over the
//     timeline), against the bound stated in docs/DESIGN.md, section 6.
//
// The package has no non-test code; run it with
//
//	go test -race -count=1 -v ./internal/chaostest/
package chaostest
