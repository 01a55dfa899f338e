package overrides

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/policy"
)

func TestPending(t *testing.T) {
	p := NewPending()
	ctx := context.Background()
	o := policy.Override{Namespace: "orders", Subject: "u",
		Limits: map[string]policy.Patch{"per-minute": {Limit: 5}}}
	if _, err := p.Load(ctx, "orders"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Load before Set: %v", err)
	}
	if err := p.Put(ctx, o, 10); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("Put before Set: %v", err)
	}
	if _, err := p.Delete(ctx, "orders", "u"); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("Delete before Set: %v", err)
	}
	if err := p.DeleteExpired(ctx, "orders", []string{"u"}, time.Now()); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("DeleteExpired before Set: %v", err)
	}
	wctx, cancel := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() { p.Watch(wctx, func() []string { return nil }, func(string) {}); close(watched) }()

	fs, err := OpenFile("")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Set(fs); err != nil {
		t.Fatal(err)
	}
	if err := p.Set(fs); err == nil {
		t.Fatal("a second Set accepted")
	}
	if err := p.Put(ctx, o, 10); err != nil {
		t.Fatal(err)
	}
	if got, err := p.Load(ctx, "orders"); err != nil || len(got) != 1 || got[0].Subject != "u" {
		t.Fatalf("Load after Set: %v %v", got, err)
	}
	cancel() // Watch is now the real store's, which returns with its context
	<-watched
}
