package lease

import (
	"math"
	"time"

	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/store"
)

// Holder is the lease protocol of one holder (an instance in front of a
// shared store, or a region in front of a global budget) for one key: the
// slices it holds, the demand it sees, and when it may ask next. It is
// pure: time comes in as arguments, takes and returns go out as values for
// the caller to send (Store sends them to a store.Leaser; the simulation in
// internal/leasesim delivers them after a delay), so the same code runs in
// both. It is not safe for concurrent use.
//
// A caller
//
//  1. calls Expire before deciding, and sends the Returns it gives;
//  2. calls Check (one check of a cost) or Admit (a batch of unit checks),
//     which decide from the slices and may ask it to send a take (Ask),
//     sent at that instant;
//  3. reports every take it sent with Granted or Failed (one take is in
//     flight at a time);
//  4. calls Drain when it stops, and sends the Returns it gives.
//
// While the bucket has units to spare, a holder asks for more whenever its
// slices run low (Size). Every take reports the holder's demand, and the
// store answers with the total of the standing reports. When that exceeds
// the limit's rate and the bucket has no more to spare, the holder is
// contended: it takes its share of its own demand (Share: the rate over
// the total), once every half lease, and denies what that does not cover
// until its next take.
type Holder struct {
	rule      limit.Rule // as the store keeps it (StoreRule)
	d         time.Duration
	slices    []Slice // oldest first
	avail     int64   // the sum of the slices' Left
	demand    rate
	rtt       time.Duration // a take's round trip, weighted over the last few
	contended bool          // the last take found no units to spare
	share     float64       // contended: this holder's share of its demand (Share)
	notBefore time.Time     // contended: no take before then
	asking    bool          // a take in flight
}

// Slice is a grant being spent: Left of its units may be spent until
// Expires.
type Slice struct {
	Grant   store.Grant
	Left    int64
	Expires time.Time
}

// Return is what a slice did not spend, to give back to the store
// (store.Leaser.Return).
type Return struct {
	Grant  store.Grant
	Unused int64
}

// Ask is a take for the caller to send (store.Leaser.Take): N units, and
// the holder's Demand (units per second) for its report (store.Report).
type Ask struct {
	N      int64
	Demand float64
}

// Step is what Check decided.
type Step struct {
	// Decided: Allowed says the answer (with RetryAfter when denied).
	// Otherwise the slices cannot tell yet: the caller waits for the take
	// in flight (its own Ask or an earlier one) and checks again.
	Decided, Allowed bool
	RetryAfter       time.Duration
	// Ask, when its N is not 0, is a take for the caller to send now,
	// whatever it decided.
	Ask Ask
}

// NewHolder returns a Holder of a store rule (StoreRule) whose slices may be
// spent for d after their take was sent.
func NewHolder(storeRule limit.Rule, d time.Duration) *Holder {
	return &Holder{rule: storeRule, d: d, share: 1}
}

// SetRule changes the store rule and the lease duration (a reload); the
// slices held stay, with the leases they were taken under.
func (h *Holder) SetRule(storeRule limit.Rule, d time.Duration) { h.rule, h.d = storeRule, d }

// Avail is the units the slices hold.
func (h *Holder) Avail() int64 { return h.avail }

// Asking reports whether a take is in flight.
func (h *Holder) Asking() bool { return h.asking }

// Contended reports whether the last take found no units to spare, and
// the share of its demand the holder then takes.
func (h *Holder) Contended() (bool, float64) { return h.contended, h.share }

// Demand is the demand seen, in units per second, at now.
func (h *Holder) Demand(now time.Time) float64 { return h.demand.perSecond(now) }

// Expire ends the slices whose lease ended by now and appends what they did
// not spend to ret.
func (h *Holder) Expire(now time.Time, ret []Return) []Return {
	if len(h.slices) == 0 || now.Before(h.slices[0].Expires) {
		return ret // the oldest slice expires first: one take in flight at a time
	}
	n := 0
	for _, sl := range h.slices {
		if now.Before(sl.Expires) {
			h.slices[n] = sl
			n++
			continue
		}
		if sl.Left > 0 {
			h.avail -= sl.Left
			ret = append(ret, Return{sl.Grant, sl.Left})
		}
	}
	clear(h.slices[n:])
	h.slices = h.slices[:n]
	return ret
}

// Drain ends every slice and appends what they did not spend to ret.
func (h *Holder) Drain(ret []Return) []Return {
	for _, sl := range h.slices {
		if sl.Left > 0 {
			ret = append(ret, Return{sl.Grant, sl.Left})
		}
	}
	h.slices, h.avail = nil, 0
	return ret
}

// Check decides one check of cost at now, among instances sharing the
// bucket. With wait set, a check the slices cannot cover waits for a take
// (Step.Decided false); without, it is denied at once (a holder whose takes
// cross regions never holds a check up for one).
func (h *Holder) Check(now time.Time, cost int64, instances int, wait bool) Step {
	switch {
	case cost > h.rule.Burst:
		return Step{Decided: true, RetryAfter: limit.RetryNever}
	case h.avail >= cost:
		h.count(now, cost)
		h.spend(cost)
		return Step{Decided: true, Allowed: true, Ask: h.prefetch(now, instances)}
	case now.Before(h.notBefore):
		h.count(now, cost)
		return Step{Decided: true, RetryAfter: h.notBefore.Sub(now)}
	case h.asking && wait:
		return Step{}
	case h.asking:
		h.count(now, cost)
		return Step{Decided: true, RetryAfter: h.rule.Interval()}
	}
	if !wait {
		h.count(now, cost)
	}
	ask := h.ask(now, max(h.want(now, instances), cost)-h.avail)
	if wait {
		return Step{Ask: ask}
	}
	return Step{Decided: true, RetryAfter: h.rule.Interval(), Ask: ask}
}

// Admit decides n checks of one unit each at now, never waiting: it admits
// as many as the slices hold and returns a take to send, if one is due.
func (h *Holder) Admit(now time.Time, n int64, instances int) (admitted int64, ask Ask) {
	h.count(now, n)
	admitted = min(n, h.avail)
	h.spend(admitted)
	if admitted < n && !h.asking && !now.Before(h.notBefore) {
		return admitted, h.ask(now, h.want(now, instances)-h.avail)
	}
	return admitted, h.prefetch(now, instances)
}

// Undo gives back cost units that an admitted check spent and a later part
// of the same request denied: they never left this holder.
func (h *Holder) Undo(cost int64) {
	if n := len(h.slices); n > 0 {
		h.slices[n-1].Left += cost
		h.avail += cost
	}
}

// count records the demand of a check (admitted or not).
func (h *Holder) count(now time.Time, cost int64) { h.demand.add(now, cost) }

// spend takes cost units off the slices, oldest first.
func (h *Holder) spend(cost int64) {
	h.avail -= cost
	for i := range h.slices {
		if cost == 0 {
			return
		}
		sp := min(cost, h.slices[i].Left)
		h.slices[i].Left -= sp
		cost -= sp
	}
}

// ask starts a take of n units (at least 1).
func (h *Holder) ask(now time.Time, n int64) Ask {
	h.asking = true
	return Ask{N: max(1, n), Demand: h.demand.perSecond(now)}
}

// prefetch starts a take when the slices hold less than half of what the
// holder wants and it may ask.
func (h *Holder) prefetch(now time.Time, instances int) Ask {
	if h.asking || now.Before(h.notBefore) {
		return Ask{}
	}
	want := h.want(now, instances)
	if 2*h.avail >= want {
		return Ask{}
	}
	return h.ask(now, want-h.avail)
}

// want is what the slices should hold: Size of the demand, or when
// contended of this holder's share of it, and at least what that spends in
// two round trips of a take (so that a take far from its store, in another
// region, lands before the slices run out).
func (h *Holder) want(now time.Time, instances int) int64 {
	d := h.share * h.demand.perSecond(now)
	inFlight := int64(math.Ceil(2 * d * h.rtt.Seconds()))
	return min(max(Size(d, h.d, h.rule, instances), inFlight), MaxHeld(h.rule, instances))
}

// Granted reports the answer to the take a sent at sent: its units become
// a slice, spendable until sent plus the lease duration, and its demand
// tally says whether the holder is contended (see Holder).
func (h *Holder) Granted(now, sent time.Time, a Ask, g store.Grant) {
	h.asking = false
	if rtt := now.Sub(sent); h.rtt == 0 {
		h.rtt = rtt
	} else {
		h.rtt += (rtt - h.rtt) / 4
	}
	if g.Taken > 0 {
		h.slices = append(h.slices, Slice{Grant: g, Left: g.Taken, Expires: sent.Add(h.d)})
		h.avail += g.Taken
	}
	// Contended: the bucket could not give what was asked, or the demand
	// exceeds the rate and the bucket holds less than half its burst (the
	// same test for every holder; a bucket that fills up while the tally
	// says it is contended has units nobody takes, as when a holder died
	// and its demand is still in the tally). A short grant while the tally
	// says the rate covers the demand, as at a start when the tally has
	// heard little, paces the holder too instead of letting it ask on
	// every check.
	share := Share(h.rule, g.Demand)
	h.contended = g.Taken < a.N || (share < 1 && 2*g.Decision.Remaining < h.rule.Burst)
	h.share, h.notBefore = 1, time.Time{}
	if h.contended {
		// The next take, half a lease on, is sent a round trip early so
		// that it lands as this one's share runs out.
		h.share = share
		h.notBefore = sent.Add(max(h.d/2-h.rtt, h.d/4))
	}
}

// Failed reports a take that failed: the holder decides from what it
// holds, and the next check that needs more asks again.
func (h *Holder) Failed() { h.asking = false }

// demandTau is the time constant of the demand estimate; minSpan is the
// shortest span a fresh estimate is measured over.
const (
	demandTau = time.Second
	minSpan   = 100 * time.Millisecond
)

// rate is an exponentially weighted estimate of units per second: each
// unit counts 1/tau at its instant and decays by e every tau, so a steady
// demand of r units per second reads r. A fresh estimate (the first units,
// or the first after the estimate decayed to nothing) is corrected for the
// span it has seen, at least minSpan, so that a holder reads a sudden
// demand within a tenth of a second instead of ramping up over tau.
type rate struct {
	v         float64 // uncorrected, at at
	at, since time.Time
}

// idleRate is the estimate below which a rate starts afresh.
const idleRate = 0.01

func (r *rate) add(now time.Time, n int64) {
	raw := r.decayed(now)
	if r.since.IsZero() || raw < idleRate {
		r.since, raw = now, 0
	}
	r.v = raw + float64(n)/demandTau.Seconds()
	if now.After(r.at) {
		r.at = now
	}
}

// decayed is the uncorrected estimate at now.
func (r *rate) decayed(now time.Time) float64 {
	dt := now.Sub(r.at)
	if r.at.IsZero() || dt <= 0 {
		return r.v
	}
	return r.v * expNeg(dt.Seconds()/demandTau.Seconds())
}

// expNeg is e^-x for x >= 0. Below 1e-4 (checks 100 µs apart or closer,
// the case under load) its Taylor polynomial of degree 2, within 2e-13 of
// it, spares a check the exponential.
func expNeg(x float64) float64 {
	if x < 1e-4 {
		return 1 - x + x*x/2
	}
	return math.Exp(-x)
}

func (r *rate) perSecond(now time.Time) float64 {
	raw := r.decayed(now)
	if raw == 0 {
		return 0
	}
	x := max(now.Sub(r.since), minSpan).Seconds() / demandTau.Seconds()
	if x > 40 {
		return raw // 1 - e^-40 is 1 in a float64
	}
	return raw / -math.Expm1(-x)
}
