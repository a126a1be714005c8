package callback_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/videoworker/videoworker/callback"
)

func TestCheckURL(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		url string
		p   callback.Policy
		ok  bool
	}{
		{"https://hooks.example.com/videos?token=x", callback.Policy{}, true},
		{"https://93.184.216.34/hook", callback.Policy{}, true},
		{"http://hooks.example.com/videos", callback.Policy{}, false},
		{"http://127.0.0.1:8080/hook", callback.Policy{}, false},
		{"http://127.0.0.1:8080/hook", callback.Policy{AllowLoopback: true}, true},
		{"http://localhost:8080/hook", callback.Policy{AllowLoopback: true}, true},
		{"https://localhost/hook", callback.Policy{}, false},
		{"http://[::1]:8080/hook", callback.Policy{AllowLoopback: true}, true},
		{"http://10.0.0.5/hook", callback.Policy{AllowLoopback: true}, false},
		{"https://10.0.0.5/hook", callback.Policy{}, false},
		{"https://10.0.0.5/hook", callback.Policy{AllowPrivate: true}, true},
		{"https://192.168.1.1/hook", callback.Policy{}, false},
		{"https://172.16.0.1/hook", callback.Policy{}, false},
		{"https://169.254.169.254/latest/meta-data", callback.Policy{}, false},
		{"https://[fd00:ec2::254]/", callback.Policy{}, false},
		{"https://[fe80::1]/", callback.Policy{}, false},
		{"https://100.64.0.1/", callback.Policy{}, false},
		{"https://0.0.0.0/", callback.Policy{AllowPrivate: true, AllowLoopback: true}, false},
		{"https://[::ffff:10.0.0.1]/", callback.Policy{}, false},
		{"https://user:pw@hooks.example.com/", callback.Policy{}, false},
		{"ftp://hooks.example.com/", callback.Policy{}, false},
		{"/relative", callback.Policy{}, false},
		{"https://" + strings.Repeat("a", 3000) + ".com/", callback.Policy{}, false},
	} {
		err := tt.p.CheckURL(tt.url)
		if (err == nil) != tt.ok {
			t.Errorf("CheckURL(%.60s, %+v) = %v, want ok %v", tt.url, tt.p, err, tt.ok)
		}
		if err != nil && !errors.Is(err, callback.ErrForbiddenURL) {
			t.Errorf("CheckURL(%.60s): %v does not wrap ErrForbiddenURL", tt.url, err)
		}
		if err != nil && strings.Contains(err.Error(), "pw") {
			t.Errorf("the error repeats the URL's user info: %v", err)
		}
	}
}

// TestControlRefusesForbiddenAddresses: the dialer's check runs on the
// address actually dialled.
func TestControlRefusesForbiddenAddresses(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		addr string
		p    callback.Policy
		ok   bool
	}{
		{"93.184.216.34:443", callback.Policy{}, true},
		{"127.0.0.1:6379", callback.Policy{}, false},
		{"127.0.0.1:6379", callback.Policy{AllowLoopback: true}, true},
		{"10.1.2.3:443", callback.Policy{}, false},
		{"10.1.2.3:443", callback.Policy{AllowPrivate: true}, true},
		{"169.254.169.254:80", callback.Policy{}, false},
		{"[::1]:443", callback.Policy{}, false},
		{"[fd00::1]:443", callback.Policy{}, false},
	} {
		if err := tt.p.Control("tcp4", tt.addr, nil); (err == nil) != tt.ok {
			t.Errorf("Control(%s, %+v) = %v, want ok %v", tt.addr, tt.p, err, tt.ok)
		}
	}
	if err := (callback.Policy{}).CheckAddr(netip.MustParseAddr("8.8.8.8")); err != nil {
		t.Errorf("a public address refused: %v", err)
	}
}

// TestClientRefusesANameResolvingToLoopback: a URL whose name passes the
// submit check ("localhost" here stands for any name that resolves to a
// forbidden address, e.g. by DNS rebinding) is refused when dialled, and
// the receiver gets nothing.
func TestClientRefusesANameResolvingToLoopback(t *testing.T) {
	t.Parallel()
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	defer srv.Close()
	port := srv.URL[strings.LastIndex(srv.URL, ":")+1:]
	c := callback.NewHTTPClient(callback.Policy{}, 5*time.Second)
	code, _, err := callback.Post(t.Context(), c, "http://localhost:"+port+"/hook?token=secret-token", "k", "e", 1, []byte("{}"), time.Now())
	if !errors.Is(err, callback.ErrForbiddenURL) || code != 0 {
		t.Fatalf("Post to a loopback name = %d, %v; want ErrForbiddenURL", code, err)
	}
	if strings.Contains(err.Error(), "secret-token") {
		t.Errorf("the error repeats the URL: %v", err)
	}
	if hits.Load() != 0 {
		t.Errorf("the receiver got %d requests", hits.Load())
	}
	// Allowed, it gets through.
	c = callback.NewHTTPClient(callback.Policy{AllowLoopback: true}, 5*time.Second)
	if code, _, err := callback.Post(t.Context(), c, "http://localhost:"+port+"/hook", "k", "e", 1, []byte("{}"), time.Now()); err != nil || code != 200 {
		t.Fatalf("Post allowed = %d, %v", code, err)
	}
}

// TestClientFollowsNoRedirect: a 3xx is the answer; its target is never
// asked; a large answer body is read only up to the cap.
func TestClientFollowsNoRedirect(t *testing.T) {
	t.Parallel()
	var hits atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	defer target.Close()
	redir := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL, http.StatusTemporaryRedirect)
	}))
	defer redir.Close()
	c := callback.NewHTTPClient(callback.Policy{AllowLoopback: true}, 5*time.Second)
	code, _, err := callback.Post(context.Background(), c, redir.URL, "k", "e", 1, []byte("{}"), time.Now())
	if err != nil || code != http.StatusTemporaryRedirect {
		t.Fatalf("Post = %d, %v; want the 307 itself", code, err)
	}
	if hits.Load() != 0 {
		t.Errorf("the redirect was followed")
	}
}

func TestSignAndVerify(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"event_id":"j:stored:0"}`)
	ts := strconv.FormatInt(now.Unix(), 10)
	h := http.Header{}
	h.Set(callback.HeaderTimestamp, ts)
	h.Set(callback.HeaderSignature, callback.Sign("s1", ts, body))
	if err := callback.Verify([]string{"s0", "s1"}, time.Minute, h, body, now.Add(30*time.Second)); err != nil {
		t.Errorf("a genuine delivery (second secret, rotation): %v", err)
	}
	for _, tt := range []struct {
		name    string
		secrets []string
		body    []byte
		now     time.Time
		hdr     func(http.Header)
		want    error
	}{
		{"wrong secret", []string{"s2"}, body, now, nil, callback.ErrBadSignature},
		{"body changed", []string{"s1"}, []byte(`{"event_id":"j:failed:0"}`), now, nil, callback.ErrBadSignature},
		{"stale", []string{"s1"}, body, now.Add(10 * time.Minute), nil, callback.ErrStale},
		{"no secret", nil, body, now, nil, callback.ErrNoSecret},
		{"no signature", []string{"s1"}, body, now, func(h http.Header) { h.Del(callback.HeaderSignature) }, callback.ErrMissingHeader},
		{"timestamp changed", []string{"s1"}, body, now, func(h http.Header) { h.Set(callback.HeaderTimestamp, strconv.FormatInt(now.Unix()+1, 10)) }, callback.ErrBadSignature},
		{"not hex", []string{"s1"}, body, now, func(h http.Header) { h.Set(callback.HeaderSignature, "zz") }, callback.ErrBadSignature},
	} {
		hh := h.Clone()
		if tt.hdr != nil {
			tt.hdr(hh)
		}
		if err := callback.Verify(tt.secrets, time.Minute, hh, tt.body, tt.now); !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
}
