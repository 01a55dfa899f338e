// Package redistest starts real redis-server processes for tests.
//
// Tests in this project talk to real Redis, never to mocks. This package owns
// the lifecycle of those processes and offers the topologies the rate limiter
// has to support:
//
//   - [Standalone]: one redis-server.
//   - [Replicated]: a primary plus N replicas (replicaof).
//   - [Sentinel]: a primary, one replica and three sentinels monitoring it.
//   - [Cluster]: a Redis Cluster of P primaries with R replicas each, created
//     with redis-cli --cluster create.
//
// # Contract
//
//   - Real processes: every [Server] is a redis-server child process of the
//     test binary, started with exec and configured on the command line (or,
//     for sentinels, with a generated config file). No daemonizing, no
//     persistence (save "" and appendonly no), no protected mode.
//   - Loopback only: every process binds 127.0.0.1 and nothing else, and
//     every address this package hands out is a 127.0.0.1 address.
//   - Free ports: ports are picked by listening on 127.0.0.1:0 and closing
//     the listener just before redis-server binds the port; should another
//     process grab it in between, the start is retried on a fresh port.
//     Cluster nodes get a second free port for the cluster bus
//     (cluster-port), so the classic port+10000 rule never applies.
//   - Isolation: each process gets its own t.TempDir() as working directory
//     (dir, logfile, nodes.conf, sentinel.conf), so parallel tests never
//     share state.
//   - Readiness: a constructor returns only when the topology is usable: the
//     processes answer PING over a raw RESP connection, replicas report
//     master_link_status:up, sentinels know the replica and each other, and a
//     cluster reports cluster_state:ok with all 16384 slots assigned on every
//     node. Readiness is polled every 20ms with an overall deadline; nothing
//     relies on fixed sleeps.
//   - Cleanup by PID: each process's stop is registered with t.Cleanup
//     before the process starts, so everything is stopped even when a test
//     fails midway, in reverse start order. Stopping sends SIGTERM to the
//     PID this package started, waits, and sends SIGKILL if the process is
//     still alive after 3s. No process that this package did not start is
//     ever signalled. On Linux the processes also get SIGKILL as parent-death
//     signal, so they do not outlive a test binary that is killed or panics.
//     When a test has failed, the tail of each process's log is written to
//     the test log during cleanup.
//   - Missing binaries fail, never skip: when redis-server (or, for
//     clusters, redis-cli) is not on PATH, the test fails with a message
//     telling to run scripts/install-redis.sh. The one exception is the
//     quick lane, go test -short, which skips every test that starts Redis
//     (saying so, ShortSkip) and leaves them to the full lane,
//     scripts/test.sh, which never passes -short.
//
// The [Server.Do] helper speaks just enough RESP2 to set up and inspect
// servers (CONFIG SET, INFO, SET/GET, CLUSTER INFO, SENTINEL ...) without a
// client library.
//
// Functions that take a testing.TB call t.Fatalf on failure and must be
// called from the goroutine running the test, as the testing package
// requires. Methods that return an error are safe to call from any goroutine.
package redistest
