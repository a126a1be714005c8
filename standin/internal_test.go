package standin

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestDrawOutcomeRates(t *testing.T) {
	t.Parallel()
	const n = 20000
	counts := map[status]int{}
	for i := range n {
		id := fmt.Sprintf("G-%020x", i)
		st := drawOutcome(1, id, 0.2, 0.1)
		if st != drawOutcome(1, id, 0.2, 0.1) {
			t.Fatal("draw is not deterministic")
		}
		counts[st]++
	}
	for st, want := range map[status]float64{statusFailed: 0.2, statusExpired: 0.1, statusCompleted: 0.7} {
		if got := float64(counts[st]) / n; got < want-0.02 || got > want+0.02 {
			t.Errorf("%s: %.3f, want %.2f", st, got, want)
		}
	}
	same := 0
	for i := range 1000 {
		id := fmt.Sprintf("G-%020x", i)
		if drawOutcome(1, id, 0.5, 0) == drawOutcome(2, id, 0.5, 0) {
			same++
		}
	}
	if same > 600 {
		t.Errorf("seeds 1 and 2 agree on %d of 1000 draws", same)
	}
}

func TestContentDeterministic(t *testing.T) {
	t.Parallel()
	var a, b strings.Builder
	writeContent(&a, 5, "G-1", 0, 100_003)
	writeContent(&b, 5, "G-1", 0, 100_003)
	if a.String() != b.String() || a.Len() != 100_003 {
		t.Fatal("same seed, id and index give different bytes")
	}
	var c strings.Builder
	writeContent(&c, 6, "G-1", 0, 100_003)
	if a.String() == c.String() {
		t.Error("seed does not change the bytes")
	}
	if contentSHA256(5, "G-1", 0, 10) == contentSHA256(5, "G-1", 1, 10) {
		t.Error("index does not change the bytes")
	}
}

func TestUSD(t *testing.T) {
	t.Parallel()
	for nanos, want := range map[int64]string{0: "0.00", 400_000_000: "0.40", 4_800_000_000: "4.80", 12_345_678: "0.012345678", 1_000_000_000: "1.00"} {
		if got := usd(nanos); got != want {
			t.Errorf("usd(%d) = %q, want %q", nanos, got, want)
		}
	}
}

// TestScale holds 100,000 jobs and lists them: memory per job and the cost
// of a page must stay small.
func TestScale(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	// Not parallel: the heap measurement needs the other tests paused.
	now := time.Date(2026, 6, 10, 20, 0, 0, 0, time.UTC)
	s := New(Config{APIKey: "k", QueuedFor: time.Minute, ProcessingFor: time.Minute, Now: func() time.Time { return now }}, nil)
	p := createParams{model: "google/veo-3.1-lite", prompt: "one shared prompt", seconds: 8, size: "720p", width: 1280, height: 720, samples: 1, audio: -1}
	const n = 100_000

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	s.mu.Lock()
	for range n {
		s.addJobLocked(p, "", now)
	}
	s.mu.Unlock()
	runtime.GC()
	runtime.ReadMemStats(&after)
	perJob := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("heap per job: %.0f bytes", perJob)
	if perJob > 600 {
		t.Errorf("heap per job = %.0f bytes, want at most 600", perJob)
	}

	list := func(query string) (int, time.Duration) {
		req := httptest.NewRequest(http.MethodGet, "/v1/videos"+query, nil)
		req.Header.Set("Authorization", "Bearer k")
		rec := httptest.NewRecorder()
		start := time.Now()
		s.ServeHTTP(rec, req)
		took := time.Since(start)
		var out struct {
			Data []json.RawMessage `json:"data"`
		}
		if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &out) != nil {
			t.Fatalf("list %s: %d", query, rec.Code)
		}
		return len(out.Data), took
	}
	got, page := list("?limit=200")
	if got != 200 {
		t.Errorf("page of %d", got)
	}
	got, scan := list("?status=completed") // no match: one full pass
	if got != 0 {
		t.Errorf("completed: %d", got)
	}
	t.Logf("list page of 200: %v; filtered full pass over %d jobs: %v", page, n, scan)
	runtime.KeepAlive(s)
}

func FuzzParseCreate(f *testing.F) {
	for _, seed := range []string{
		`{"model":"google/veo-3.1-lite","prompt":"p"}`,
		`{"model":"m/x","prompt":"p","size":"1280x720","resolution":"720p"}`,
		`{"model":"m/x","prompt":"p","seconds":"8","webhook":{"url":"https://h.test","events":["job.completed"]}}`,
		`{"model":"m/x","prompt":"p","input_references":[{"type":"audio_url","media_url":{"url":"https://a"}}],"input_audio_duration":3}`,
		`{"model":"m/x","prompt":"p","frame_images":[{"type":"image_url","image_url":{"url":"https://a"}}],"output":{"access":"bytes"}}`,
		`[]`, `null`, `{`, `{"model":null,"prompt":7}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		p, e := parseCreate(body)
		if e != nil {
			if e.status != http.StatusBadRequest || e.code == "" {
				t.Fatalf("error %+v", e)
			}
			return
		}
		if strings.TrimSpace(p.model) == "" || strings.TrimSpace(p.prompt) == "" || p.samples < 1 || p.samples > 4 ||
			p.seconds < 1 || p.seconds > 120 || p.width < 16 || p.height < 16 {
			t.Fatalf("accepted %q as %+v", body, p)
		}
	})
}

func BenchmarkCreate(b *testing.B) {
	s := New(Config{APIKey: "k", QueuedFor: time.Minute}, nil)
	body := `{"model":"google/veo-3.1-lite","prompt":"bench"}`
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest(http.MethodPost, "/v1/videos", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer k")
			rec := httptest.NewRecorder()
			s.ServeHTTP(rec, req)
			if rec.Code != http.StatusAccepted {
				b.Fatal(rec.Code)
			}
		}
	})
}

func BenchmarkListPage(b *testing.B) {
	now := time.Now()
	s := New(Config{APIKey: "k", Now: func() time.Time { return now }}, nil)
	s.mu.Lock()
	for range 100_000 {
		s.addJobLocked(createParams{model: "m/x", prompt: "p", seconds: 8, samples: 1, width: 1280, height: 720, audio: -1}, "", now)
	}
	s.mu.Unlock()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodGet, "/v1/videos?limit=50", nil)
		req.Header.Set("Authorization", "Bearer k")
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatal(rec.Code)
		}
	}
}

func BenchmarkContent(b *testing.B) {
	s := New(Config{APIKey: "k"}, nil)
	s.mu.Lock()
	j := s.addJobLocked(createParams{model: "m/x", prompt: "p", seconds: 8, samples: 1, width: 1280, height: 720, audio: -1}, "", time.Now())
	s.mu.Unlock()
	b.SetBytes(s.cfg.ContentSize)
	for b.Loop() {
		req := httptest.NewRequest(http.MethodGet, "/v1/videos/"+j.id+"/content", nil)
		req.Header.Set("Authorization", "Bearer k")
		s.ServeHTTP(httptest.NewRecorder(), req)
	}
}
