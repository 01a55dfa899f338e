package service

import (
	"context"
	"sync"
)

// MaxManyConcurrency bounds the subjects CheckMany decides at once on a
// remote store.
const MaxManyConcurrency = 64

// CheckMany decides reqs, each as Check would, into res and errs (of the
// same length): the checks of one namespace and subject one after the
// other, in the order of reqs, as if sent in sequence. A request whose
// errs[i] is already set (a transport could not decode it) is left as it
// is. With a remote store (a Guard: Redis), the checks of different
// subjects are decided concurrently, so that the store batches them into
// few round trips; with an in-process store, in order, on this goroutine
// (nothing to wait for).
func (s *Service) CheckMany(ctx context.Context, reqs []Request, res []Result, errs []error) {
	if s.guard == nil || len(reqs) < 2 {
		for i := range reqs {
			if errs[i] == nil {
				errs[i] = s.CheckTo(ctx, reqs[i], &res[i]) // in place: see CheckTo
			}
		}
		return
	}
	type key struct{ ns, subject string }
	order := make(map[key][]int, len(reqs))
	var keys []key
	for i, r := range reqs {
		if errs[i] != nil {
			continue
		}
		k := key{r.Namespace, r.Subject}
		if _, ok := order[k]; !ok {
			keys = append(keys, k)
		}
		order[k] = append(order[k], i)
	}
	slots := make(chan struct{}, MaxManyConcurrency)
	var wg sync.WaitGroup
	for _, k := range keys {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			for _, i := range order[k] {
				errs[i] = s.CheckTo(ctx, reqs[i], &res[i]) // in place: see CheckTo
			}
		})
	}
	wg.Wait()
}
