package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Role is what an operator may do on the pages.
type Role int

// Roles, weakest first.
const (
	// RoleNone is an unauthenticated caller.
	RoleNone Role = iota
	// RoleViewer may read the dashboard, the monitoring UI and jobs.
	RoleViewer
	// RoleOperator may also cancel and retry jobs and act on tasks.
	RoleOperator
)

func (r Role) String() string {
	switch r {
	case RoleViewer:
		return "viewer"
	case RoleOperator:
		return "operator"
	}
	return "none"
}

// Auth holds the credentials the server accepts. Secrets are kept only as
// SHA-256 digests and compared in constant time.
type Auth struct {
	tokens [][32]byte
	users  map[string]operator

	// Set by bound (server.New).
	throttle *LoginThrottle
	log      *slog.Logger
}

// bound returns a copy of a that throttles failed logins with t and logs
// them to log.
func (a *Auth) bound(t *LoginThrottle, log *slog.Logger) *Auth {
	b := *a
	b.throttle, b.log = t, log
	return &b
}

type operator struct {
	pass [32]byte
	role Role
}

// NewAuth parses API tokens (API_TOKENS: comma separated) and operators
// (OPERATORS: comma separated user:password:role, role viewer or
// operator). Either may be empty; with both empty nothing is reachable
// except health checks and webhooks.
func NewAuth(tokens, operators string) (*Auth, error) {
	a := &Auth{users: map[string]operator{}}
	var errs []error
	for i, t := range splitList(tokens) {
		if len(t) < 16 {
			errs = append(errs, fmt.Errorf("API_TOKENS: token %d is shorter than 16 characters", i+1))
			continue
		}
		a.tokens = append(a.tokens, sha256.Sum256([]byte(t)))
	}
	for i, o := range splitList(operators) {
		user, rest, ok1 := strings.Cut(o, ":")
		pass, role, ok2 := strings.Cut(rest, ":")
		if !ok1 || !ok2 || user == "" || pass == "" {
			errs = append(errs, fmt.Errorf("OPERATORS: entry %d: want user:password:role", i+1))
			continue
		}
		var r Role
		switch role {
		case "viewer":
			r = RoleViewer
		case "operator":
			r = RoleOperator
		default:
			errs = append(errs, fmt.Errorf("OPERATORS: entry %d (%s): role must be viewer or operator", i+1, user))
			continue
		}
		if len(pass) < 8 {
			errs = append(errs, fmt.Errorf("OPERATORS: entry %d (%s): password shorter than 8 characters", i+1, user))
			continue
		}
		a.users[user] = operator{pass: sha256.Sum256([]byte(pass)), role: r}
	}
	return a, errors.Join(errs...)
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// identify returns who made r: an API token holder (treated as an
// operator of the job API), a named operator, or nobody.
func (a *Auth) identify(r *http.Request) (name string, role Role, viaToken bool) {
	h := r.Header.Get("Authorization")
	if tok, ok := strings.CutPrefix(h, "Bearer "); ok {
		d := sha256.Sum256([]byte(strings.TrimSpace(tok)))
		match := 0
		for _, t := range a.tokens {
			match |= subtle.ConstantTimeCompare(d[:], t[:])
		}
		if match == 1 {
			return "api-token", RoleOperator, true
		}
		return "", RoleNone, true
	}
	if user, pass, ok := r.BasicAuth(); ok {
		d := sha256.Sum256([]byte(pass))
		u, found := a.users[user]
		if !found {
			u = operator{} // compare anyway: same time for unknown users
		}
		if subtle.ConstantTimeCompare(d[:], u.pass[:]) == 1 && found {
			return user, u.role, false
		}
	}
	return "", RoleNone, false
}

// require wraps next so that only callers with at least role get through.
// API callers (bearer) get 401 JSON; browsers get a Basic challenge.
// Failed logins are logged with the client's address and the user name
// (never the secret) and throttled (LoginThrottle): a locked-out address
// or user gets 429 with Retry-After, whatever it presents.
func (a *Auth) require(role Role, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ri := reqInfoOf(r)
		method, user := presented(r)
		if method != "" {
			ri.user = user
		}
		k := keysOf(ri.client, user, method == "basic")
		if a.throttle != nil && method != "" {
			if wait := a.throttle.Locked(k); wait > 0 {
				w.Header().Set("Retry-After", strconv.FormatInt(int64((wait+time.Second-1)/time.Second), 10))
				writeError(w, http.StatusTooManyRequests, "too_many_attempts", "too many failed logins; retry later", nil)
				return
			}
		}
		name, got, viaToken := a.identify(r)
		if got == RoleNone {
			if method != "" && a.throttle != nil {
				failures, lock := a.throttle.Fail(k)
				a.logger().WarnContext(r.Context(), "login failed", "client", ri.client.String(), "user", user, "auth", method,
					"path", r.URL.Path, "failures", failures, "locked_for", lock)
			}
			if !viaToken {
				w.Header().Set("WWW-Authenticate", `Basic realm="videoworker", charset="UTF-8"`)
			} else {
				w.Header().Set("WWW-Authenticate", `Bearer realm="videoworker"`)
			}
			writeError(w, http.StatusUnauthorized, "unauthorized", "valid credentials required", nil)
			return
		}
		ri.user = name
		if a.throttle != nil {
			a.throttle.Succeed(k)
		}
		if got < role {
			writeError(w, http.StatusForbidden, "forbidden", "this account is read-only", nil)
			return
		}
		next.ServeHTTP(w, r.WithContext(withUser(withRole(r.Context(), got), name)))
	})
}

// presented returns how r tries to log in ("bearer", "basic" or "" for
// not at all) and, for Basic, the user name (at most 64 bytes of it).
func presented(r *http.Request) (method, user string) {
	h := r.Header.Get("Authorization")
	if _, ok := strings.CutPrefix(h, "Bearer "); ok {
		return "bearer", ""
	}
	if u, _, ok := r.BasicAuth(); ok {
		if len(u) > 64 {
			u = u[:64]
		}
		return "basic", u
	}
	if h != "" {
		return "other", ""
	}
	return "", ""
}

func (a *Auth) logger() *slog.Logger {
	if a.log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return a.log
}

// requireRead lets viewers through for safe methods and demands an
// operator for the rest.
func (a *Auth) requireRead(next http.Handler) http.Handler {
	read, write := a.require(RoleViewer, next), a.require(RoleOperator, next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
			read.ServeHTTP(w, r)
		default:
			write.ServeHTTP(w, r)
		}
	})
}

type userKey struct{}

func withUser(ctx context.Context, name string) context.Context {
	return context.WithValue(ctx, userKey{}, name)
}

// userOf returns the caller's name as set by Auth: the operator's login,
// or "api-token".
func userOf(ctx context.Context) string {
	n, _ := ctx.Value(userKey{}).(string)
	return n
}
