package redisstore

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/rueidis"

	"github.com/distributedratelimiter/ratelimiter/store"
)

// Failure handling of the client, beyond what the service's deadline and
// circuit breaker do (service.Guard):
//
//   - A check whose caller gave up (its context ended) while it was queued
//     is never sent: it can no longer be answered, and sending it would
//     consume for a request that was answered by a failure policy.
//   - Dialing and every connection's reads and writes are bounded by
//     Options.Timeout, so a black-holed Redis is detected and the
//     connection replaced within about Timeout, rather than the TCP
//     keep-alive's tens of seconds.
//   - Cluster: the script calls of one batch go to their nodes each on its
//     own and complete as soon as their own node answers (sendApart), so a
//     dead or slow node holds up only the checks of its own slots.
//   - Sentinel: the client follows +switch-master and, every
//     TopologyRefresh, asks the sentinels again, so a client that missed the
//     event (its connection to a demoted primary stays up and answers
//     READONLY) recovers. Cluster: MOVED and ASK are followed by rueidis,
//     and the slot map is also re-read every TopologyRefresh.
//   - NOSCRIPT (a restarted or newly promoted server has an empty script
//     cache) falls back to EVAL, which loads the script again (send).
//   - Any other error reply (READONLY, CLUSTERDOWN, LOADING) and any
//     network error is reported as store.ErrUnavailable, for the caller's
//     failure policy.

// dropAbandoned completes, without sending, the calls whose callers have
// given up, and returns the others (in calls' backing array).
func dropAbandoned(calls []*call) []*call {
	live := calls[:0]
	for _, c := range calls {
		if err := c.ctx.Err(); err != nil {
			c.err = fmt.Errorf("redisstore: %w: not sent: %w", store.ErrUnavailable, err)
			close(c.done)
			continue
		}
		live = append(live, c)
	}
	return live
}

// resilient sets the client's connection timeouts from opts.
func resilient(co *rueidis.ClientOption, opts Options) {
	t := opts.Timeout
	if t <= 0 {
		t = time.Second
	}
	co.Dialer.Timeout = t
	co.ConnWriteTimeout = t
	co.Sentinel.Dialer.Timeout = t
	if opts.Mode == Cluster {
		co.ClusterOption.ShardsRefreshInterval = topologyRefresh(opts)
	}
}

func topologyRefresh(opts Options) time.Duration {
	switch {
	case opts.TopologyRefresh < 0:
		return 0
	case opts.TopologyRefresh == 0:
		return 2 * time.Second
	}
	return opts.TopologyRefresh
}

// sendApart sends the script calls of a Cluster batch each from its own
// goroutine and completes each call's checks when its own node answers, so
// that the flusher is free at once and a dead node's calls (waiting up to
// Timeout) hold up nobody else. Close waits for them (s.wg).
func (s *Store) sendApart(groups [][]*call, cmds rueidis.Commands, nowS, nowNs string) {
	s.wg.Add(len(groups))
	for i, g := range groups {
		go func() {
			defer s.wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
			defer cancel()
			start := time.Now()
			res := s.client.Do(ctx, cmds[i])
			if err, ok := rueidis.IsRedisErr(res.Error()); ok && err.IsNoScript() {
				res = s.client.Do(ctx, s.command("", g, nowS, nowNs))
			}
			s.observed(start, len(g))
			s.complete(g, res)
		}()
	}
}
