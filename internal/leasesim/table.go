package leasesim

import (
	"fmt"
	"strings"
	"time"
)

// Table renders pairs of results (Compare: without and with partitions)
// as the Markdown table of docs/DESIGN.md.
func Table(pairs [][2]Result) string {
	var b strings.Builder
	b.WriteString("| regions | simulated | one-way delays | limit/s | checks | over-admitted, holder reachable | over-admitted across partitions, of what the limit allowed over them | limit used while demand exceeds it | messages to the holder/s | checks that waited for another region |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|\n")
	for _, p := range pairs {
		r, q := p[0], p[1]
		c := q.Config
		fmt.Fprintf(&b, "| %d | %v (a day of %v); %d partitions of %v | %v to %v | %d | %d | %d | %d (%.3f%%) | %.2f%% (over %v) | %.1f | %d of %d |\n",
			c.Regions, c.Run, c.Day, c.Partitions, c.PartitionFor, c.MinDelay, c.MaxDelay, c.Limit, r.Checks,
			r.Over, q.Over, 100*q.PartitionOver(), 100*r.SaturatedUsed, r.Saturated.Round(time.Second),
			float64(r.Takes+r.Returns)/c.Run.Seconds(), r.Waited+q.Waited, r.Checks+q.Checks)
	}
	return b.String()
}
