// Package extract builds what an HTTP request is checked as (its client's
// address, its descriptors) for the transports that see requests, not
// checks: the gate, the reverse proxy and the middleware.
//
// # The client's address
//
// The TCP peer is the client unless it is one of Options.TrustedProxies (a
// load balancer, the proxy in front): then the client is read from the
// Forwarded header (its for= parameters), or else X-Forwarded-For, walking
// from the right, past every trusted address, to the first address that is
// not trusted. A client that writes those headers itself only adds
// addresses on the left, which are never reached while an untrusted one
// stands to their right; a peer that is not trusted is never asked at all.
// A header that does not parse stops the walk at the last trusted hop,
// whose address is used.
//
// An IPv6 client is limited by its network, not its address: the address
// is masked to Options.IPv6Prefix bits (default /64), since a host gets a
// whole /64 and rotates addresses within it at will.
package extract

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/distributedratelimiter/ratelimiter/policy"
	"github.com/distributedratelimiter/ratelimiter/service"
)

// DefaultIPv6Prefix is the network an IPv6 client is limited as.
const DefaultIPv6Prefix = 64

// ErrNoAddress is returned when the request carries no usable peer
// address.
var ErrNoAddress = errors.New("no client address")

// Options say whom to trust and how to group addresses. The zero value
// trusts no proxy and groups IPv6 by /64.
type Options struct {
	// TrustedProxies are the peers whose Forwarded and X-Forwarded-For
	// headers are believed.
	TrustedProxies []netip.Prefix
	// IPv6Prefix is the prefix length an IPv6 client is limited as, 1 to
	// 128. Default DefaultIPv6Prefix.
	IPv6Prefix int
}

// ParseTrusted reads a comma-separated list of CIDR prefixes or single
// addresses ("10.0.0.0/8, 192.168.1.7").
func ParseTrusted(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		if p, err := netip.ParsePrefix(f); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR prefix or an address", f)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

func (o Options) trusted(a netip.Addr) bool {
	for _, p := range o.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ClientAddress is the address the request's client is limited as: see the
// package documentation. IPv6 addresses come masked to Options.IPv6Prefix
// ("2001:db8:1:2::/64").
func ClientAddress(r *http.Request, o Options) (string, error) {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	peer, err := netip.ParseAddr(host)
	if err != nil {
		return "", fmt.Errorf("%w in %q", ErrNoAddress, r.RemoteAddr)
	}
	client := peer.Unmap().WithZone("")
	if o.trusted(client) {
		hops := forwarded(r)
		for i := len(hops) - 1; i >= 0; i-- {
			a, err := netip.ParseAddr(hops[i])
			if err != nil {
				break // garbage: the last trusted hop stands
			}
			client = a.Unmap().WithZone("")
			if !o.trusted(client) {
				break
			}
		}
	}
	return group(client, o.IPv6Prefix), nil
}

// group renders an address: an IPv4 address as it is, an IPv6 one as its
// network of prefix bits.
func group(a netip.Addr, prefix int) string {
	if a.Is4() {
		return a.String()
	}
	if prefix <= 0 || prefix > 128 {
		prefix = DefaultIPv6Prefix
	}
	p, _ := a.Prefix(prefix)
	return p.String()
}

// forwarded returns the client chain the request's headers claim, the
// nearest hop last: the for= parameters of Forwarded (RFC 7239), or else
// X-Forwarded-For, over every header line.
func forwarded(r *http.Request) []string {
	var hops []string
	if fs := r.Header.Values("Forwarded"); len(fs) > 0 {
		for _, line := range fs {
			for _, elem := range strings.Split(line, ",") {
				for _, pair := range strings.Split(elem, ";") {
					k, v, ok := strings.Cut(strings.TrimSpace(pair), "=")
					if !ok || !strings.EqualFold(k, "for") {
						continue
					}
					v = strings.Trim(v, `"`)
					if strings.HasPrefix(v, "[") { // "[2001:db8::1]:4711"
						if end := strings.Index(v, "]"); end > 0 {
							v = v[1:end]
						}
					} else if h, _, err := net.SplitHostPort(v); err == nil {
						v = h
					}
					hops = append(hops, v)
				}
			}
		}
		return hops
	}
	for _, line := range r.Header.Values("X-Forwarded-For") {
		for _, h := range strings.Split(line, ",") {
			hops = append(hops, strings.TrimSpace(h))
		}
	}
	return hops
}

// Descriptors builds the request's descriptors as its namespace says
// (policy.RequestDescriptor), each costing cost. A descriptor a part of the
// request is missing for is left out.
func Descriptors(r *http.Request, ns *policy.Namespace, cost int64, o Options) ([]service.Descriptor, error) {
	var out []service.Descriptor
	for _, rd := range ns.RequestDescriptors {
		d := service.Descriptor{Cost: cost}
		d.Entries = make([]policy.Entry, 0, len(rd))
		for _, e := range rd {
			var v string
			switch e.From {
			case policy.FromHeader:
				v = r.Header.Get(e.Header)
			case policy.FromClientAddress:
				a, err := ClientAddress(r, o)
				if err != nil {
					return nil, err
				}
				v = a
			case policy.FromMethod:
				v = r.Method
			case policy.FromPath:
				v = policy.MatchPath(e.Paths, r.URL.Path)
			case policy.FromValue:
				v = e.Value
			}
			if v == "" {
				d.Entries = nil
				break
			}
			d.Entries = append(d.Entries, policy.Entry{Key: e.Key, Value: v})
		}
		if d.Entries != nil {
			out = append(out, d)
		}
	}
	return out, nil
}
