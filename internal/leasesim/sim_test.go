package leasesim

import (
	"testing"
)

// The small configuration (10 regions, a day compressed to two hours, two
// partitions), run without partitions and with them: no over-admission
// while every region reaches the holder; across the partitions at most the
// partitioned region's local share (1/10 of the limit here; 1/100, 1%, in
// the full configuration); at least 97% of the limit used while the demand
// exceeds it; and no check waits for another region.
func TestSmall(t *testing.T) {
	reachable, partitioned, err := Compare(Small)
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + Table([][2]Result{{reachable, partitioned}}))
	if reachable.Over != 0 {
		t.Errorf("%d admissions over the limit while every region reached the holder", reachable.Over)
	}
	if po, bound := partitioned.PartitionOver(), 1/float64(Small.Regions); po > bound || partitioned.Over == 0 {
		t.Errorf("over-admission across partitions %.3f%% of what the limit allowed, want at most %.0f%% (and some: the local share)", 100*po, 100*bound)
	}
	for _, r := range []Result{reachable, partitioned} {
		if r.Saturated == 0 || r.SaturatedUsed < 0.97 {
			t.Errorf("saturated for %v, used %.1f%% of the limit then; want at least 97%%", r.Saturated, 100*r.SaturatedUsed)
		}
		if r.Waited != 0 || r.Local != r.Checks || r.Checks == 0 {
			t.Errorf("%d checks, %d decided locally, %d waited for another region", r.Checks, r.Local, r.Waited)
		}
	}
}

// Two runs of one configuration are the same run.
func TestDeterministic(t *testing.T) {
	cfg := Small
	cfg.Run = cfg.Day / 8
	a, err := Run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Errorf("two runs differ:\n%+v\n%+v", a, b)
	}
}
