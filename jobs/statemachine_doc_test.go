package jobs_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/videoworker/videoworker/jobs"
)

// TestStateMachineDoc keeps docs/state-machine.md (the state diagram and
// its two tables: transitions that keep the state, the task each state
// waits on) in step with jobs.Table and jobs.WaitsOn.
func TestStateMachineDoc(t *testing.T) {
	b, err := os.ReadFile("../docs/state-machine.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	start := strings.Index(doc, "# The job's state machine")
	if start < 0 {
		t.Fatal("docs/state-machine.md has no heading \"The job's state machine\"")
	}
	sec := doc[start+1:]
	if end := regexp.MustCompile(`\n# `).FindStringIndex(sec); end != nil {
		sec = sec[:end[0]]
	}
	groups := map[string][]jobs.State{
		"unfinished": {jobs.StateQueued, jobs.StateSubmitting, jobs.StateGenerating, jobs.StateDownloading},
		"ended":      {jobs.StateFailed, jobs.StateTimedOut},
	}
	expand := func(name string) []jobs.State {
		if g, ok := groups[name]; ok {
			return g
		}
		return []jobs.State{jobs.State(name)}
	}

	// The diagram's edges against the table's state-changing edges.
	var got, want []string
	edge := regexp.MustCompile(`^\s*(\S+) --> (\S+): (\S+)\s*$`)
	for _, line := range strings.Split(sec, "\n") {
		m := edge.FindStringSubmatch(line)
		if m == nil || m[1] == "[*]" {
			continue
		}
		for _, f := range expand(m[1]) {
			for _, to := range expand(m[2]) {
				got = append(got, string(f)+" -> "+string(to)+": "+m[3])
			}
		}
	}
	var notes []string
	for _, r := range jobs.Table {
		self := len(r.To) == 0
		for _, f := range r.From {
			for _, to := range r.To {
				if f == to {
					self = true
					continue
				}
				want = append(want, string(f)+" -> "+string(to)+": "+string(r.Transition))
			}
		}
		if self {
			notes = append(notes, string(r.Transition))
		}
	}
	compare(t, "diagram edges", got, want)

	// The table of transitions that keep the state.
	var gotNotes []string
	row := regexp.MustCompile("^\\| `([a-z_]+)` \\|")
	for _, line := range strings.Split(sec, "\n") {
		if m := row.FindStringSubmatch(line); m != nil {
			gotNotes = append(gotNotes, m[1])
		}
	}
	compare(t, "transitions that keep the state", gotNotes, notes)

	// The table of what each state waits on.
	waits := regexp.MustCompile(`^\| ([a-z_, ]+) \| (.+) \|$`)
	seen := map[jobs.State]bool{}
	for _, line := range strings.Split(sec, "\n") {
		m := waits.FindStringSubmatch(line)
		if m == nil || m[1] == "state " || strings.HasPrefix(m[1], "state") {
			continue
		}
		for _, name := range strings.Split(m[1], ",") {
			st := jobs.State(strings.TrimSpace(name))
			if !slices.Contains(jobs.AllStates, st) {
				continue
			}
			seen[st] = true
			step := jobs.WaitsOn[st]
			switch {
			case step == jobs.StepTenant && !strings.HasPrefix(m[2], "no task: its tenant's waiting list"):
				t.Errorf("docs/state-machine.md: %s waits on %q; the code: its tenant's waiting list", st, m[2])
			case step == jobs.StepTenant:
			case step == jobs.StepNone && m[2] != "nothing":
				t.Errorf("docs/state-machine.md: %s waits on %q; the code: nothing", st, m[2])
			case step != jobs.StepNone && !strings.HasPrefix(m[2], "`video:"+string(step)+"`"):
				t.Errorf("docs/state-machine.md: %s waits on %q; the code: video:%s", st, m[2], step)
			}
		}
	}
	for _, st := range jobs.AllStates {
		if !seen[st] {
			t.Errorf("docs/state-machine.md: the table of what each state waits on lacks %s", st)
		}
	}
}

func compare(t *testing.T, what string, got, want []string) {
	t.Helper()
	sort.Strings(got)
	sort.Strings(want)
	got, want = slices.Compact(got), slices.Compact(want)
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("docs/state-machine.md %s: missing %q (in jobs.Table)", what, w)
		}
	}
	for _, g := range got {
		if !slices.Contains(want, g) {
			t.Errorf("docs/state-machine.md %s: %q is not in jobs.Table", what, g)
		}
	}
}

// TestNoFieldBagsOutsideJobs: outside this package, production code
// changes a job only through the typed transitions (Store.Do), never by
// building a Change of raw fields.
func TestNoFieldBagsOutsideJobs(t *testing.T) {
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "jobs" || strings.HasPrefix(d.Name(), ".")) && path != ".." {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if strings.Contains(string(b), "jobs.Change{") {
			t.Errorf("%s builds a jobs.Change: use a transition of jobs.Table with Store.Do", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
