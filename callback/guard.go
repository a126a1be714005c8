package callback

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// Policy says which addresses a callback URL may reach.
type Policy struct {
	// AllowPrivate lets callbacks reach private (RFC 1918, ULA), link-local,
	// CGNAT and cloud metadata addresses (CALLBACK_ALLOW_PRIVATE): for a
	// receiver inside the same network.
	AllowPrivate bool
	// AllowLoopback lets callbacks reach loopback addresses, over plain
	// http too (CALLBACK_ALLOW_LOOPBACK): for development on one machine.
	AllowLoopback bool
}

// ErrForbiddenURL marks a callback URL (or a resolved address) the policy
// refuses.
var ErrForbiddenURL = errors.New("callback URL not allowed")

// MaxURLBytes bounds a callback URL.
const MaxURLBytes = 2048

// cgnat is 100.64.0.0/10 (carrier-grade NAT, also used by some clouds'
// internal services).
var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// CheckAddr reports why ip may not be called under p (nil: it may).
func (p Policy) CheckAddr(ip netip.Addr) error {
	ip = ip.Unmap()
	switch {
	case !ip.IsValid():
		return fmt.Errorf("%w: not an address", ErrForbiddenURL)
	case ip.IsLoopback():
		if p.AllowLoopback {
			return nil
		}
		return fmt.Errorf("%w: %s is a loopback address (CALLBACK_ALLOW_LOOPBACK is off)", ErrForbiddenURL, ip)
	case ip.IsUnspecified(), ip.IsMulticast(), ip.IsInterfaceLocalMulticast():
		return fmt.Errorf("%w: %s is not a unicast address", ErrForbiddenURL, ip)
	case ip.IsPrivate(), ip.IsLinkLocalUnicast(), cgnat.Contains(ip):
		// Link-local covers the cloud metadata address 169.254.169.254;
		// private covers fd00:ec2::254.
		if p.AllowPrivate {
			return nil
		}
		return fmt.Errorf("%w: %s is a private, link-local or metadata address (CALLBACK_ALLOW_PRIVATE is off)", ErrForbiddenURL, ip)
	}
	return nil
}

// CheckURL validates a callback URL at submit: absolute https (http only
// to a loopback host, with AllowLoopback), no user info, and a host that,
// when it is a literal address, the policy allows. Names are checked
// again at every connection on the addresses they resolve to (Client).
func (p Policy) CheckURL(raw string) error {
	if len(raw) > MaxURLBytes {
		return fmt.Errorf("%w: longer than %d bytes", ErrForbiddenURL, MaxURLBytes)
	}
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" || u.Opaque != "" {
		return fmt.Errorf("%w: not an absolute http(s) URL", ErrForbiddenURL)
	}
	if u.User != nil {
		return fmt.Errorf("%w: user info is not allowed", ErrForbiddenURL)
	}
	host := u.Hostname()
	ip, ipErr := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
	loopback := strings.EqualFold(host, "localhost") || (ipErr == nil && ip.Unmap().IsLoopback())
	switch u.Scheme {
	case "https":
	case "http":
		if !loopback || !p.AllowLoopback {
			return fmt.Errorf("%w: https is required (plain http only to a loopback host, with CALLBACK_ALLOW_LOOPBACK)", ErrForbiddenURL)
		}
	default:
		return fmt.Errorf("%w: scheme %q: https is required", ErrForbiddenURL, truncate(u.Scheme, 16))
	}
	if ipErr == nil {
		return p.CheckAddr(ip)
	}
	if loopback && !p.AllowLoopback {
		return fmt.Errorf("%w: localhost (CALLBACK_ALLOW_LOOPBACK is off)", ErrForbiddenURL)
	}
	return nil
}

// Control is a net.Dialer Control function that refuses a connection to
// an address the policy forbids: it runs after name resolution, for the
// very address dialled, so a name that resolves to a forbidden address
// (or changes to one between the check and the call: DNS rebinding) is
// refused too.
func (p Policy) Control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: address %q", ErrForbiddenURL, address)
	}
	return p.CheckAddr(ap.Addr())
}

// MaxResponseBytes is how much of a receiver's answer is read (and
// discarded).
const MaxResponseBytes = 64 << 10

// NewHTTPClient returns the client that delivers callbacks: every
// connection checked by p.Control, no proxy, no redirects followed (a
// 3xx is the answer), and timeout for the whole exchange.
func NewHTTPClient(p Policy, timeout time.Duration) *http.Client {
	d := &net.Dialer{Timeout: timeout, Control: p.Control}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           d.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
	}
	return &http.Client{Timeout: timeout, Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// Drain reads at most MaxResponseBytes of body, discards them and closes
// it.
func Drain(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, MaxResponseBytes))
	_ = body.Close()
}

// Post sends one signed delivery of body to rawURL and returns the
// receiver's status (0 with an error when there was no answer). secret
// signs; attempt and eventID go in their headers.
func Post(ctx context.Context, c *http.Client, rawURL, secret, eventID string, attempt int, body []byte, now time.Time) (int, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, rawURL, strings.NewReader(string(body)))
	if err != nil {
		return 0, nil, fmt.Errorf("%w: %v", ErrForbiddenURL, err)
	}
	ts := fmt.Sprint(now.Unix())
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "videoworker-callback/1")
	req.Header.Set(HeaderTimestamp, ts)
	req.Header.Set(HeaderSignature, Sign(secret, ts, body))
	req.Header.Set(HeaderEventID, eventID)
	req.Header.Set(HeaderAttempt, fmt.Sprint(attempt))
	resp, err := c.Do(req)
	if err != nil {
		// The URL may carry a token: keep only the cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return 0, nil, fmt.Errorf("post callback: %w", err)
	}
	Drain(resp.Body)
	return resp.StatusCode, resp.Header, nil
}
