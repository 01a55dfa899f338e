package headers

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/distributedratelimiter/ratelimiter/policy"
	"github.com/distributedratelimiter/ratelimiter/service"
)

// RequestCost returns what a request passing a gate-like transport (the
// gate endpoint, the reverse proxy, the net/http middleware) is charged:
// 1, unless the namespace names a trusted cost_header (policy.Namespace
// CostHeader) and the request carries it, in which case its value, a
// positive integer. Whatever the client sends in any other header is
// ignored: a client cannot choose its cost. A cost of 0 is an error, never
// a peek: a gate admits a request it does not charge for no one. Errors
// wrap service.ErrInvalidCost.
func RequestCost(r *http.Request, ns *policy.Namespace) (int64, error) {
	if ns.CostHeader == "" {
		return 1, nil
	}
	v := r.Header.Get(ns.CostHeader)
	if v == "" {
		return 1, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	switch {
	case err != nil:
		var ne *strconv.NumError
		if errors.As(err, &ne) && ne.Err == strconv.ErrRange {
			return 0, fmt.Errorf("%w: header %s: %.32q is out of range", service.ErrInvalidCost, ns.CostHeader, v)
		}
		return 0, fmt.Errorf("%w: header %s: must be an integer, got %.32q", service.ErrInvalidCost, ns.CostHeader, v)
	case n < 1:
		return 0, fmt.Errorf("%w: header %s: %d; a gated request costs at least 1 (a peek is POST /v1/check with cost 0)", service.ErrInvalidCost, ns.CostHeader, n)
	}
	return n, nil
}
