package jobs

import "testing"

// TestSlotWith: the waiters' keys land in the create lock key's Redis
// Cluster slot: a key without a hash tag becomes the tag; a key with one
// keeps it (a prefix such as "app{x}:").
func TestSlotWith(t *testing.T) {
	for _, tc := range []struct{ key, want string }{
		{"videoworker:create_lock:openai/sora-2", "{videoworker:create_lock:openai/sora-2}"},
		{"app{x}:create_lock:m", "app{x}:create_lock:m"},
		{"a{}b:create_lock:m", "{a{}b:create_lock:m}"}, // an empty tag is no tag
	} {
		if got := slotWith(tc.key); got != tc.want {
			t.Errorf("slotWith(%q) = %q, want %q", tc.key, got, tc.want)
		}
	}
	s := &Store{prefix: "videoworker:"}
	if got, want := s.createWaitersKey("Veo-3"), "{videoworker:create_lock:veo-3}:waiters"; got != want {
		t.Errorf("createWaitersKey = %q, want %q", got, want)
	}
	if got, want := seenKey(s.createWaitersKey("veo-3")), "{videoworker:create_lock:veo-3}:seen"; got != want {
		t.Errorf("seen key = %q, want %q", got, want)
	}
}
