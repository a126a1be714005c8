package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/standin"
	"github.com/videoworker/videoworker/storage"
	"github.com/videoworker/videoworker/tasks"
)

// verify counts and checks everything once the fleet has stopped: every
// job's final record, the stand-in's creates per prompt, and every file in
// the storage directory.
func (h *harness) verify(ctx context.Context) error {
	rep := h.rep
	n := h.cfg.Jobs
	stats := h.api.Stats()

	recs, missing, err := h.readRecords(ctx)
	if err != nil {
		return err
	}
	byPrompt, err := h.videosByPrompt(ctx)
	if err != nil {
		h.logf("listing the API's jobs failed (duplicates are counted, not named): %v", err)
	}

	var problems []Problem
	add := func(i int, kind, detail string) {
		p := Problem{JobID: string(h.jobID(i)), Kind: kind, Detail: detail}
		if r := recs[i]; r != nil {
			p.State, p.VideoID = string(r.State), r.VideoID
		}
		problems = append(problems, p)
	}

	rep.Jobs.ByState = map[string]int{}
	rep.Jobs.FailedByCode = map[string]int{}
	owners := map[string][]int{}
	stored := map[string]int{} // object path → job index
	ours := map[string]bool{}
	h.track.mu.Lock()
	isSub := slices.Clone(h.track.isSub)
	h.track.mu.Unlock()
	for i := range n {
		prompt := h.prompt(i)
		ours[prompt] = true
		if !isSub[i] {
			continue
		}
		rep.Jobs.Submitted++
		rec := recs[i]
		if missing[i] {
			rep.Jobs.Lost++
			rep.Jobs.Missing++
			add(i, "lost", "no job record: Redis lost it")
		} else {
			rep.Jobs.ByState[string(rec.State)]++
			if h.cfg.Tenants {
				if rep.Jobs.ByTenant == nil {
					rep.Jobs.ByTenant = map[string]int{}
				}
				rep.Jobs.ByTenant[rec.Tenant]++
				if want := h.tenant(i); rec.Tenant != want {
					rep.Jobs.WrongTenant++
					add(i, "wrong tenant", fmt.Sprintf("tenant %q, submitted as %q", rec.Tenant, want))
				}
			}
			if !rec.State.Terminal() {
				rep.Jobs.Lost++
				add(i, "lost", fmt.Sprintf("not terminal at the end: %s (updated %s before the drain ended)", rec.State, time.Since(rec.UpdatedAt).Round(time.Second)))
			}
			switch {
			case rec.State == jobs.StateFailed:
				rep.Jobs.FailedByCode[rec.ErrorCode]++
				if rec.ErrorCode != "generation_failed" && (rec.ErrorCode != "budget_exceeded" || !h.cfg.Budgets) {
					rep.Jobs.UnexpectedFailures++
					add(i, "unexpected failure", rec.ErrorCode+": "+rec.Error)
				}
			case rec.State == jobs.StateCancelled || rec.State == jobs.StateTimedOut:
				rep.Jobs.UnexpectedFailures++
				add(i, "unexpected failure", string(rec.State)+": "+rec.ErrorCode+": "+rec.Error)
			}
		}

		creates := stats.JobsByPrompt[prompt]
		rep.Creates.PerJobMax = max(rep.Creates.PerJobMax, creates)
		switch {
		case creates == 0:
			rep.Creates.JobsWithNone++
		case creates == 1:
			rep.Creates.JobsWithOne++
		default:
			rep.Creates.Duplicate += creates - 1
			rep.Creates.DuplicateJobs = append(rep.Creates.DuplicateJobs, string(h.jobID(i)))
			ids := byPrompt[prompt]
			video := ""
			if rec != nil {
				video = rec.VideoID
			}
			add(i, "duplicate create", fmt.Sprintf("%d API jobs for this prompt: %s (the record holds %q)", creates, strings.Join(ids, ", "), video))
		}
		if rec == nil {
			continue
		}
		if creates > 0 && rec.VideoID == "" {
			rep.Creates.Unadopted++
			add(i, "unadopted create", fmt.Sprintf("the API created %s for this job, but its record has no video id", strings.Join(byPrompt[prompt], ", ")))
		}
		if rec.VideoID != "" {
			owners[rec.VideoID] = append(owners[rec.VideoID], i)
			if info, ok := h.api.Job(rec.VideoID); !ok {
				add(i, "unknown video", "the API has no job "+rec.VideoID)
			} else if info.Prompt != prompt {
				add(i, "wrong video", fmt.Sprintf("video %s was created for prompt %q", rec.VideoID, info.Prompt))
			}
		}
		if rec.State == jobs.StateStored {
			rep.Objects.Stored++
			path, problem := h.checkObject(rec, prompt)
			if problem != "" {
				rep.Objects.Corrupt++
				add(i, "corrupt object", problem)
			} else {
				rep.Objects.Verified++
				rep.Objects.Bytes += rec.Bytes
			}
			if path != "" {
				stored[path] = i
			}
		}
	}
	for prompt, c := range stats.JobsByPrompt {
		if !ours[prompt] {
			rep.Creates.Foreign += c
		}
	}
	for v, is := range owners {
		if len(is) > 1 {
			rep.Creates.SharedVideos++
			var ids []string
			for _, i := range is {
				ids = append(ids, string(h.jobID(i)))
			}
			add(is[0], "shared video", fmt.Sprintf("video %s is the video of jobs %s", v, strings.Join(ids, ", ")))
		}
	}
	rep.Creates.CreateCalls, rep.Creates.JobsCreated = stats.CreateCalls, stats.JobsCreated
	if err := h.walkStorage(stored); err != nil {
		return err
	}

	rep.APICalls = stats.Calls
	rep.Faults.API = stats.Faults
	rep.Faults.TimeoutsBefore, rep.Faults.TimeoutsAfter = h.holds.before.Load(), h.holds.after.Load()
	wh := stats.Webhooks
	rep.Faults.WebhookLost, rep.Faults.WebhookDup, rep.Faults.WebhookBadSig = wh.Dropped, wh.Duplicated, wh.WrongSignature
	for _, c := range wh.Events {
		rep.Webhooks.Events += c
	}
	rep.Webhooks.Attempts, rep.Webhooks.Delivered, rep.Webhooks.Failed = wh.Attempts, wh.Delivered, wh.Failed
	rep.Webhooks.Retried, rep.Webhooks.FailedPermanently, rep.Webhooks.Pending = wh.Retried, wh.FailedPermanently, wh.Pending
	if h.cfg.Webhooks {
		if m, err := jobs.NewStore(h.rdb, "").WebhookStats(ctx); err == nil {
			rep.Webhooks.Receiver = m
		}
	}
	if h.callbacks != nil {
		rep.Callbacks = h.callbacks.report(recs, add)
	}
	if h.cfg.Budgets {
		b := h.budget()
		rep.Budget = BudgetReport{On: true, Model: b.Model, LimitUSD: apiclient.FormatMicros(b.Limit), JobEstimateUSD: apiclient.FormatMicros(b.JobEstimate),
			Exceeded: rep.Jobs.FailedByCode["budget_exceeded"]}
		var settled int64
		for i, rec := range recs {
			if rec != nil && isSub[i] && rec.Request.Model == b.Model && rec.SettledCost.Known {
				settled += rec.SettledCost.Micros
				if rec.SettledCost.Micros > 0 {
					rep.Budget.Paid++
				}
			}
		}
		rep.Budget.SettledUSD = apiclient.FormatMicros(settled)
		rep.Budget.Overspent = settled > b.Limit+b.JobEstimate
	}
	kills, exits, started := h.fleet.snapshot()
	rep.Chaos.Kills, rep.Chaos.KillList, rep.Chaos.UnexpectedExits, rep.Chaos.WorkersStarted = len(kills), kills, exits, started

	h.latency(ctx, recs)

	rep.ProblemsTotal = len(problems)
	if len(problems) > maxProblems {
		problems = problems[:maxProblems]
	}
	for k := range problems {
		h.describe(ctx, &problems[k], recs)
	}
	rep.Problems = problems
	for _, p := range problems {
		if p.Kind == "lost" && len(rep.Jobs.LostIDs) < 100 {
			rep.Jobs.LostIDs = append(rep.Jobs.LostIDs, p.JobID)
		}
	}
	return nil
}

// latency fills rep.Latency from the records (and, for reconciled jobs,
// their histories).
func (h *harness) latency(ctx context.Context, recs []*jobs.Record) {
	l := &h.rep.Latency
	var created, done, doubt []time.Duration
	for _, r := range recs {
		if r == nil {
			continue
		}
		if !r.CreatedAt.IsZero() {
			created = append(created, r.CreatedAt.Sub(r.SubmittedAt))
		}
		if !r.FinishedAt.IsZero() {
			done = append(done, r.FinishedAt.Sub(r.SubmittedAt))
		}
		if r.Reconcile == "" {
			continue
		}
		l.Reconciled++
		if strings.HasPrefix(r.Reconcile, "adopted") {
			l.Adopted++
		} else if strings.Contains(r.Reconcile, "submitting again") {
			l.Resubmitted++
		}
		hist, err := h.producer.History(ctx, tasks.JobID(r.ID))
		if err != nil {
			continue
		}
		var started time.Time
		for _, e := range hist {
			switch e.Event {
			case "create_started":
				started = e.At
			case "reconciled":
				if !started.IsZero() {
					doubt = append(doubt, e.At.Sub(started))
					started = time.Time{}
				}
			}
		}
	}
	l.ToCreated, l.ToDone, l.InDoubt = percentiles(created), percentiles(done), percentiles(doubt)
}

// readRecords reads every submitted job's record; missing[i] is set for a
// job without one.
func (h *harness) readRecords(ctx context.Context) ([]*jobs.Record, []bool, error) {
	n := h.cfg.Jobs
	recs, missing := make([]*jobs.Record, n), make([]bool, n)
	work := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for range statusWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				var err error
				for attempt := 0; attempt < 5; attempt++ {
					var rec *jobs.Record
					rec, err = h.producer.Status(ctx, h.jobID(i))
					if err == nil {
						recs[i] = h.withArchive(ctx, rec)
						break
					}
					if errors.Is(err, jobs.ErrNotFound) {
						// Forgotten after its retention: its archive is the job.
						recs[i] = h.forgotten(ctx, string(h.jobID(i)))
						missing[i], err = recs[i] == nil, nil
						break
					}
					wait(ctx, time.Second)
				}
				if err != nil {
					mu.Lock()
					firstErr = cmpOr(firstErr, fmt.Errorf("read job %s: %w", h.jobID(i), err))
					mu.Unlock()
				}
			}
		}()
	}
	h.track.mu.Lock()
	isSub := slices.Clone(h.track.isSub)
	h.track.mu.Unlock()
	for i := range n {
		if isSub[i] {
			work <- i
		}
	}
	close(work)
	wg.Wait()
	return recs, missing, firstErr
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// videosByPrompt lists every job the API holds (faults off now) and maps
// prompts to video ids, to name duplicates.
func (h *harness) videosByPrompt(ctx context.Context) (map[string][]string, error) {
	h.api.SetFaults(standin.Faults{})
	h.holds.off()
	c, err := apiclient.New(apiclient.Config{BaseURL: h.apiURL + "/v1", APIKey: apiKey, Timeout: 30 * time.Second})
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	after := ""
	for {
		l, err := c.List(ctx, apiclient.ListParams{Limit: 200, Order: "asc", After: after})
		if err != nil {
			return out, err
		}
		for _, v := range l.Data {
			if info, ok := h.api.Job(v.ID); ok {
				out[info.Prompt] = append(out[info.Prompt], v.ID)
			}
		}
		if !l.HasMore || len(l.Data) == 0 {
			return out, nil
		}
		after = l.LastID
		if after == "" {
			after = l.Data[len(l.Data)-1].ID
		}
	}
}

// checkObject re-hashes a stored job's file and compares it with what the
// API says the video is. It returns the file's path and "" when all is
// well, else what is wrong.
func (h *harness) checkObject(rec *jobs.Record, prompt string) (string, string) {
	u, err := url.Parse(rec.Location)
	if err != nil || u.Scheme != "file" || u.Path == "" {
		return "", fmt.Sprintf("location %q is not a file URL", rec.Location)
	}
	path := filepath.FromSlash(u.Path)
	want, err := h.api.ContentSHA256(rec.VideoID, 0)
	if err != nil {
		return path, fmt.Sprintf("the API does not know video %s: %v", rec.VideoID, err)
	}
	f, err := os.Open(path)
	if err != nil {
		return path, fmt.Sprintf("object missing: %v", err)
	}
	defer f.Close()
	sum := sha256.New()
	size, err := io.Copy(sum, f)
	if err != nil {
		return path, fmt.Sprintf("reading %s: %v", path, err)
	}
	got := hex.EncodeToString(sum.Sum(nil))
	var wrong []string
	if size != h.cfg.ContentSize {
		wrong = append(wrong, fmt.Sprintf("size %d, want %d", size, h.cfg.ContentSize))
	}
	if got != want {
		wrong = append(wrong, fmt.Sprintf("sha256 %s, want %s (API, video %s)", got, want, rec.VideoID))
	}
	if !strings.EqualFold(rec.SHA256, want) {
		wrong = append(wrong, fmt.Sprintf("record's sha256 %s, want %s", rec.SHA256, want))
	}
	if rec.Bytes != h.cfg.ContentSize {
		wrong = append(wrong, fmt.Sprintf("record's bytes %d, want %d", rec.Bytes, h.cfg.ContentSize))
	}
	if info, ok := h.api.Job(rec.VideoID); ok && info.Prompt != prompt {
		wrong = append(wrong, fmt.Sprintf("video %s belongs to prompt %q", rec.VideoID, info.Prompt))
	}
	return path, strings.Join(wrong, "; ")
}

// walkStorage counts the files in the storage directory: objects (each
// must be exactly one stored job's location), sidecars and temporary
// files.
func (h *harness) walkStorage(stored map[string]int) error {
	o := &h.rep.Objects
	perJob := map[string]int{}
	err := filepath.WalkDir(h.storeDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		name := d.Name()
		if rel, _ := filepath.Rel(h.storeDir, path); strings.HasPrefix(rel, "records"+string(filepath.Separator)) {
			if !strings.HasSuffix(name, ".meta") && !strings.HasPrefix(name, ".tmp-") {
				o.ArchiveDocs++ // a job's archive document (checked by readRecords)
			}
			return nil
		}
		switch {
		case strings.HasPrefix(name, ".tmp-"):
			o.TempFiles++
			return nil
		case strings.HasSuffix(name, ".meta"):
			o.Sidecars++
			return nil
		}
		o.OnDisk++
		job, _, _ := strings.Cut(name, ".")
		perJob[job]++
		if _, ok := stored[path]; !ok {
			o.Extra++
			if len(o.ExtraList) < 50 {
				rel, _ := filepath.Rel(h.storeDir, path)
				o.ExtraList = append(o.ExtraList, rel)
			}
		}
		return nil
	})
	for _, c := range perJob {
		if c > 1 {
			o.Duplicate++
		}
	}
	return err
}

// withArchive is the job rec as it stands once the retention sweep
// archived it (its record in Redis may be compact): its archive document
// with what Redis says since. A missing, unreadable or mismatched archive
// counts as bad (and the record is taken as Redis has it).
func (h *harness) withArchive(ctx context.Context, rec *jobs.Record) *jobs.Record {
	if rec.ArchivedAt.IsZero() {
		return rec
	}
	h.archMu.Lock()
	h.rep.Jobs.Archived++
	h.archMu.Unlock()
	a, err := h.archive(ctx, rec.ID)
	if err != nil {
		h.badArchive(rec.ID, err.Error())
		return rec
	}
	r, _ := a.With(rec, nil)
	return r
}

// forgotten is a job forgotten after its retention, from its archive
// document; nil when it has none (the job is lost).
func (h *harness) forgotten(ctx context.Context, id string) *jobs.Record {
	a, err := h.archive(ctx, id)
	if err != nil {
		if !errors.Is(err, storage.ErrNotExist) {
			h.badArchive(id, err.Error())
		}
		return nil
	}
	h.archMu.Lock()
	h.rep.Jobs.Archived++
	h.rep.Jobs.Forgotten++
	h.archMu.Unlock()
	return a.Record
}

// archive reads job id's archive document and checks it is the job's
// whole story: its record, ended, and a history from its submission.
func (h *harness) archive(ctx context.Context, id string) (*jobs.Archive, error) {
	a, err := jobs.LoadArchive(ctx, h.archives, id)
	switch {
	case err != nil:
		return nil, err
	case a.Record.ID != id || !a.Record.State.Terminal():
		return nil, fmt.Errorf("archive of %s holds job %s in state %s", id, a.Record.ID, a.Record.State)
	case len(a.History) == 0 || a.History[0].Event != "submitted" || a.History[len(a.History)-1].State != a.Record.State:
		return nil, fmt.Errorf("archive of %s: its history does not run from the submission to its state %s", id, a.Record.State)
	}
	return a, nil
}

// badArchive counts and notes a job whose archive is not right.
func (h *harness) badArchive(id, detail string) {
	h.archMu.Lock()
	defer h.archMu.Unlock()
	h.rep.Jobs.BadArchives++
	if len(h.badArchives) < 20 {
		h.badArchives = append(h.badArchives, id+": "+detail)
	}
}

// describe adds the record summary and history to a problem, as
// `videoworker status` shows them.
func (h *harness) describe(ctx context.Context, p *Problem, recs []*jobs.Record) {
	var rec *jobs.Record
	for i, r := range recs {
		if r != nil && string(h.jobID(i)) == p.JobID {
			rec = r
			break
		}
	}
	if rec != nil {
		p.Record = recordSummary(rec)
	}
	hist, err := h.producer.History(ctx, tasks.JobID(p.JobID))
	if err != nil {
		p.History = []string{"(history: " + err.Error() + ")"}
		return
	}
	for _, e := range hist {
		line := fmt.Sprintf("%s  %-12s %-16s %s", e.At.Format("15:04:05.000"), e.State, e.Event, e.Detail)
		p.History = append(p.History, strings.TrimRight(line, " "))
	}
}

func recordSummary(r *jobs.Record) string {
	var b strings.Builder
	fmt.Fprintf(&b, "state %s  video %q  api %s  create attempts %d, polls %d (seq %d), download attempts %d, in doubt %v",
		r.State, r.VideoID, r.APIStatus, r.CreateAttempts, r.Polls, r.PollSeq, r.DownloadAttempts, r.CreateInDoubt)
	fmt.Fprintf(&b, "\nsubmitted %s, updated %s", r.SubmittedAt.Format("15:04:05.000"), r.UpdatedAt.Format("15:04:05.000"))
	if r.Location != "" {
		fmt.Fprintf(&b, "\nstored at %s (%d bytes, sha256 %s)", r.Location, r.Bytes, r.SHA256)
	}
	if r.Error != "" {
		fmt.Fprintf(&b, "\nlast error %s: %s", r.ErrorCode, r.Error)
	}
	if r.Reconcile != "" {
		fmt.Fprintf(&b, "\nreconcile: %s", r.Reconcile)
	}
	return b.String()
}

// verdict decides PASS or FAIL.
func (h *harness) verdict() {
	r := h.rep
	fail := func(format string, a ...any) { r.Failures = append(r.Failures, fmt.Sprintf(format, a...)) }
	warn := func(format string, a ...any) { r.Warnings = append(r.Warnings, fmt.Sprintf(format, a...)) }
	if r.Jobs.Submitted < h.cfg.Jobs {
		fail("only %d of %d jobs submitted", r.Jobs.Submitted, h.cfg.Jobs)
	}
	if r.Jobs.Lost > 0 {
		fail("%d lost jobs", r.Jobs.Lost)
	}
	if r.Jobs.WrongTenant > 0 {
		fail("%d jobs with another tenant than submitted", r.Jobs.WrongTenant)
	}
	if r.Creates.Duplicate > 0 {
		fail("%d duplicate creates (%d jobs)", r.Creates.Duplicate, len(r.Creates.DuplicateJobs))
	}
	if r.Creates.Unadopted > 0 {
		fail("%d jobs created at the API but not adopted", r.Creates.Unadopted)
	}
	if r.Creates.Foreign > 0 {
		fail("%d creates with a prompt no job has", r.Creates.Foreign)
	}
	if r.Creates.SharedVideos > 0 {
		fail("%d videos adopted by more than one job", r.Creates.SharedVideos)
	}
	if r.Jobs.BadArchives > 0 {
		fail("%d jobs with a missing, unreadable or wrong archive document: %s", r.Jobs.BadArchives, strings.Join(h.badArchives, "; "))
	}
	if r.Objects.Corrupt > 0 {
		fail("%d corrupt objects", r.Objects.Corrupt)
	}
	if r.Callbacks.Missing > 0 || r.Callbacks.BadSignature > 0 {
		fail("%d terminal jobs without their callback, %d callbacks with a bad signature", r.Callbacks.Missing, r.Callbacks.BadSignature)
	}
	if r.Budget.Overspent {
		fail("budget overspent: %s settled on %s, over its %s budget plus one job's estimate (%s)", r.Budget.SettledUSD, r.Budget.Model, r.Budget.LimitUSD, r.Budget.JobEstimateUSD)
	}
	if r.Budget.On && r.Budget.Exceeded == 0 {
		warn("no job was refused budget_exceeded: the budget was never reached")
	}
	if r.Objects.Duplicate > 0 || r.Objects.Extra > 0 {
		fail("%d duplicate objects, %d extra objects", r.Objects.Duplicate, r.Objects.Extra)
	}
	if r.Jobs.UnexpectedFailures > 0 {
		warn("%d jobs failed for another reason than the API's own failure (see problems)", r.Jobs.UnexpectedFailures)
	}
	if len(r.Chaos.UnexpectedExits) > 0 {
		warn("%d worker processes exited on their own (replaced; see their log tails)", len(r.Chaos.UnexpectedExits))
	}
	if got := len(r.Chaos.RedisRestarts); got < h.cfg.RedisRestarts {
		warn("only %d of %d Redis restarts happened", got, h.cfg.RedisRestarts)
	}
	if h.cfg.KillEvery > 0 && r.Chaos.Kills == 0 {
		warn("no worker was killed")
	}
	if r.Objects.TempFiles > 0 {
		warn("%d .tmp- files left in storage (downloads write unnamed O_TMPFILE files, so only a kill between naming and renaming a replacement, or a file system without O_TMPFILE, leaves one; never valid objects, safe to delete)", r.Objects.TempFiles)
	}
	r.Pass = len(r.Failures) == 0
	r.Verdict = "PASS"
	if !r.Pass {
		r.Verdict = "FAIL"
	}
}
