// Command leasesim runs the simulation of leases across regions
// (internal/leasesim) and prints its table, the one in docs/DESIGN.md:
//
//	go run ./cmd/leasesim             # the full configuration: 100 regions, one day
//	go run ./cmd/leasesim -small      # the configuration the tests run
//
// Flags override the chosen configuration's fields. The run is seeded: the
// same flags print the same table on every machine.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/distributedratelimiter/ratelimiter/internal/leasesim"
)

func main() {
	small := flag.Bool("small", false, "run the small configuration (10 regions, a day of two hours) instead of the full one")
	cfg := leasesim.Full
	regions := flag.Int("regions", 0, "regions (0: the configuration's)")
	day := flag.Duration("day", 0, "period of the demand's daily cycle, also the run's length (0: the configuration's)")
	seed := flag.Uint64("seed", 0, "seed (0: the configuration's)")
	partitions := flag.Int("partitions", -1, "regions cut off from the holder, one at a time (-1: the configuration's)")
	partitionFor := flag.Duration("partition-for", 0, "how long each partition lasts (0: the configuration's)")
	flag.Parse()
	if *small {
		cfg = leasesim.Small
	}
	if *regions > 0 {
		cfg.Regions = *regions
	}
	if *day > 0 {
		cfg.Day, cfg.Run = *day, *day
	}
	if *seed > 0 {
		cfg.Seed = *seed
	}
	if *partitions >= 0 {
		cfg.Partitions = *partitions
	}
	if *partitionFor > 0 {
		cfg.PartitionFor = *partitionFor
	}
	start := time.Now()
	reachable, partitioned, err := leasesim.Compare(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "leasesim:", err)
		os.Exit(1)
	}
	fmt.Print(leasesim.Table([][2]leasesim.Result{{reachable, partitioned}}))
	fmt.Fprintf(os.Stderr, "leasesim: simulated %v twice in %v\n", reachable.Config.Run, time.Since(start).Round(time.Second))
}
