package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
)

// ParseTrustedProxies parses TRUSTED_PROXIES: comma-separated CIDRs or
// single addresses of the reverse proxies whose X-Forwarded-For the
// server believes. Every problem is named.
func ParseTrustedProxies(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	var errs []error
	for _, f := range splitList(s) {
		if p, err := netip.ParsePrefix(f); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			errs = append(errs, fmt.Errorf("TRUSTED_PROXIES: %q is neither a CIDR nor an address", f))
			continue
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, errors.Join(errs...)
}

// clientAddr returns the address of the client that made r: the peer of
// the connection, or, when the peer is one of the trusted proxies, the
// right-most address in X-Forwarded-For that is not itself a trusted
// proxy (the left-most when all are). X-Forwarded-For from any other peer
// is ignored: anyone can write it. An invalid Addr means unknown.
func clientAddr(r *http.Request, trusted []netip.Prefix) netip.Addr {
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	client := peer.Addr().Unmap()
	if !isTrusted(client, trusted) {
		return client
	}
	hops := r.Header.Values("X-Forwarded-For")
	for i := len(hops) - 1; i >= 0; i-- {
		parts := strings.Split(hops[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			a, err := netip.ParseAddr(strings.TrimSpace(parts[j]))
			if err != nil {
				return client // a malformed hop: trust nothing left of it
			}
			client = a.Unmap()
			if !isTrusted(client, trusted) {
				return client
			}
		}
	}
	return client
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// reqInfo is what the access log learns of a request from the handlers
// inside it.
type reqInfo struct {
	client netip.Addr
	// user is the caller's name, or the user name of a failed Basic login.
	user string
}

type reqInfoKey struct{}

func withReqInfo(ctx context.Context, ri *reqInfo) context.Context {
	return context.WithValue(ctx, reqInfoKey{}, ri)
}

// reqInfoOf returns the request's reqInfo; outside the access log a new
// one with the peer's address.
func reqInfoOf(r *http.Request) *reqInfo {
	if ri, ok := r.Context().Value(reqInfoKey{}).(*reqInfo); ok {
		return ri
	}
	return &reqInfo{client: clientAddr(r, nil)}
}
