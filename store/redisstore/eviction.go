package redisstore

import (
	"context"
	"fmt"
	"sort"
	"strings"
)

// EvictionRisk asks every Redis node the client knows (INFO memory, which
// managed services allow where CONFIG is renamed away) whether it may evict
// keys: a maxmemory above 0 with a maxmemory-policy other than noeviction.
// Redis evicting a limiter key gives its subject back what it had spent,
// silently; with noeviction a full Redis refuses the writes instead, which
// the failure policies answer and the alerts report. It returns one line
// per node at risk ("addr: maxmemory 100mb, maxmemory-policy allkeys-lru"),
// none when no node is; nodes that do not answer are skipped.
func (s *Store) EvictionRisk(ctx context.Context) []string {
	var risks []string
	for addr, c := range s.client.Nodes() {
		info, err := c.Do(ctx, c.B().Info().Section("memory").Build()).ToString()
		if err != nil {
			continue
		}
		var maxmemory, human, policy string
		for _, line := range strings.Split(info, "\n") {
			k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
			if !ok {
				continue
			}
			switch k {
			case "maxmemory":
				maxmemory = v
			case "maxmemory_human":
				human = v
			case "maxmemory_policy":
				policy = v
			}
		}
		if maxmemory != "" && maxmemory != "0" && policy != "" && policy != "noeviction" {
			risks = append(risks, fmt.Sprintf("%s: maxmemory %s, maxmemory-policy %s", addr, human, policy))
		}
	}
	sort.Strings(risks)
	return risks
}
