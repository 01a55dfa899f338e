package service_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/clock/clocktest"
	"github.com/distributedratelimiter/ratelimiter/service"
)

// CheckMany decides the checks of one subject in the order given, with an
// in-process store and with a remote one (a Guard: subjects decided
// concurrently): of 40 checks per subject against a limit of 10, exactly
// the first 10 of each subject pass; a bad check fails alone.
func TestCheckManyKeepsEachSubjectsOrder(t *testing.T) {
	clk := clocktest.New(epoch)
	snap := policySnapshot(t, "v1", tokenBucket("per-hour", 10, time.Hour))
	plain, err := service.New(newMemstore(t, clk), snap, service.Options{Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	guarded := newGuarded(t, &flaky{st: newMemstore(t, clk)}, snap, clk, service.Guard{})
	for name, svc := range map[string]*service.Service{"in-process": plain, "guarded": guarded} {
		t.Run(name, func(t *testing.T) {
			var reqs []service.Request
			for i := range 160 {
				reqs = append(reqs, service.Request{Namespace: "local", Subject: fmt.Sprint("s", i%4), Cost: 1})
			}
			reqs = append(reqs, service.Request{Namespace: "nope", Subject: "s0", Cost: 1})
			res, errs := make([]service.Result, len(reqs)), make([]error, len(reqs))
			svc.CheckMany(context.Background(), reqs, res, errs)
			for i := range 160 {
				if errs[i] != nil {
					t.Fatalf("check %d: %v", i, errs[i])
				}
				if want := i/4 < 10; res[i].Verdict.Allowed != want || res[i].Subject != reqs[i].Subject {
					t.Errorf("check %d (%s, its subject's %d): allowed %v, want %v", i, reqs[i].Subject, i/4+1, res[i].Verdict.Allowed, want)
				}
			}
			if errs[160] == nil {
				t.Error("the unknown namespace's check did not fail")
			}
		})
	}
}
