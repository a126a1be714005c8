package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is the outcome of a soak run; it is written as JSON too.
type Report struct {
	Verdict    string    `json:"verdict"` // PASS or FAIL
	Pass       bool      `json:"pass"`
	Failures   []string  `json:"failures,omitempty"` // why the verdict is FAIL
	Warnings   []string  `json:"warnings,omitempty"` // worth a look; not failures
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at"`
	WorkDir    string    `json:"work_dir,omitempty"` // kept on disk when set

	Config  ReportConfig `json:"config"`
	Machine Machine      `json:"machine"`
	Timings Timings      `json:"timings"`
	Jobs    JobCounts    `json:"jobs"`
	Latency Latency      `json:"latency"`
	Creates Creates      `json:"creates"`
	Objects Objects      `json:"objects"`
	Chaos   Chaos        `json:"chaos"`
	Faults  Faults       `json:"faults"`
	// APICalls counts the stand-in's calls by endpoint.
	APICalls map[string]int `json:"api_calls"`
	Webhooks Webhooks       `json:"webhooks"`
	// Callbacks are the completion callbacks received (-callbacks).
	Callbacks Callbacks `json:"callbacks,omitzero"`
	// Budget is the budget's outcome (-budgets).
	Budget BudgetReport `json:"budget,omitzero"`
	// Problems lists jobs that were lost, created twice, stored wrong or
	// failed unexpectedly, each with its history (as videoworker status
	// prints it); at most maxProblems.
	Problems      []Problem `json:"problems,omitempty"`
	ProblemsTotal int       `json:"problems_total"`
}

// BudgetReport is what -budgets checks: the budgeted model's settled
// spend against its day budget.
type BudgetReport struct {
	On             bool   `json:"on"`
	Model          string `json:"model"`
	LimitUSD       string `json:"limit_usd"`
	JobEstimateUSD string `json:"job_estimate_usd"`
	SettledUSD     string `json:"settled_usd"`
	// Paid counts the model's jobs with a settled cost above zero;
	// Exceeded those refused budget_exceeded.
	Paid     int `json:"paid"`
	Exceeded int `json:"exceeded"`
	// Overspent: settled above the limit plus one job's estimate.
	Overspent bool `json:"overspent"`
}

// ReportConfig is Config as reported.
type ReportConfig struct {
	Jobs          int      `json:"jobs"`
	Workers       int      `json:"workers"`
	Concurrency   int      `json:"concurrency"`
	KillEvery     string   `json:"kill_every"`
	MaxKills      int      `json:"max_kills"`
	KillUntil     float64  `json:"kill_until"`
	RedisRestarts int      `json:"redis_restarts"`
	RedisMode     string   `json:"redis_restart_mode"` // sigterm or sigkill
	DrainTimeout  string   `json:"drain_timeout"`
	SubmitRate    float64  `json:"submit_rate"`
	Seed          int64    `json:"seed"`
	Models        []string `json:"models"`
	ContentSize   int64    `json:"content_size"`
	Redis         string   `json:"redis"`
	APITimeout    string   `json:"aistats_timeout"`
	// Retention is the workers' JOB_RETENTION, RetentionSweep their
	// JOB_RETENTION_SWEEP_INTERVAL.
	Retention      string `json:"retention"`
	RetentionSweep string `json:"retention_sweep"`
	// Callbacks, Budgets and TenantLimits say which of -callbacks,
	// -budgets and -tenants were on (TenantLimits: the workers'
	// TENANT_LIMITS, "" off).
	Callbacks    bool   `json:"callbacks"`
	Budgets      bool   `json:"budgets"`
	TenantLimits string `json:"tenant_limits,omitempty"`
	PollInterval string `json:"poll_interval"`
	API          struct {
		QueuedFor        string  `json:"queued_for"`
		ProcessingFor    string  `json:"processing_for"`
		PollAfterSeconds int     `json:"poll_after_seconds"`
		ServerErrorRate  float64 `json:"server_error_rate"`
		RateLimitRate    float64 `json:"rate_limit_rate"`
		RetryAfter       string  `json:"retry_after"`
		DropRate         float64 `json:"drop_rate"`
		TruncateRate     float64 `json:"truncate_rate"`
		Latency          string  `json:"latency"`
		TimeoutRate      float64 `json:"timeout_rate"`
		TimeoutHold      string  `json:"timeout_hold"`
		FailRate         float64 `json:"fail_rate"`
		ExpireRate       float64 `json:"expire_rate"`
	} `json:"api"`
	Webhooks struct {
		On              bool    `json:"on"`
		DropRate        float64 `json:"drop_rate"`
		DuplicateRate   float64 `json:"duplicate_rate"`
		WrongSecretRate float64 `json:"wrong_secret_rate"`
		TimeScale       float64 `json:"time_scale"`
	} `json:"webhooks"`
}

// Machine is where the run happened.
type Machine struct {
	CPUs         int    `json:"cpus"`
	OS           string `json:"os"`
	Arch         string `json:"arch"`
	GoVersion    string `json:"go_version"`
	RedisVersion string `json:"redis_version"`
}

// Timings are in seconds.
type Timings struct {
	BuildSec float64 `json:"build_s"`
	SetupSec float64 `json:"setup_s"` // build, Redis, API, serve, workers
	// SubmitSec is from the first submission to the last.
	SubmitSec float64 `json:"submit_s"`
	// DrainSec is from the first submission until every job was terminal
	// (or the drain timeout).
	DrainSec float64 `json:"drain_s"`
	// DrainAfterSubmitSec is from the last submission to the end of the
	// drain.
	DrainAfterSubmitSec float64 `json:"drain_after_submit_s"`
	VerifySec           float64 `json:"verify_s"`
	TotalSec            float64 `json:"total_s"`
	JobsPerSec          float64 `json:"jobs_per_s"` // jobs / DrainSec
	Drained             bool    `json:"drained"`    // every job terminal in time
	Interrupted         bool    `json:"interrupted,omitempty"`
}

// JobCounts are the jobs by final state.
type JobCounts struct {
	Submitted     int            `json:"submitted"`
	SubmitRetries int            `json:"submit_retries"` // Submit calls retried (Redis down)
	ByState       map[string]int `json:"by_state"`
	FailedByCode  map[string]int `json:"failed_by_code,omitempty"`
	// Lost jobs are not terminal at the end, or have no record at all.
	Lost    int      `json:"lost"`
	LostIDs []string `json:"lost_ids,omitempty"`
	// Missing jobs (part of Lost) have no record: Redis lost it.
	Missing int `json:"missing"`
	// UnexpectedFailures ended failed for another reason than the API's
	// own failure (the stand-in's fail and expire rates).
	UnexpectedFailures int `json:"unexpected_failures"`
	// Archived jobs were archived and compacted by the retention sweep
	// (read back from their archive documents); Forgotten ones (part of
	// Archived) were removed from Redis after their retention, and count
	// as finished with their archive. BadArchives have a missing,
	// unreadable or mismatched archive document.
	Archived    int `json:"archived"`
	Forgotten   int `json:"forgotten"`
	BadArchives int `json:"bad_archives"`
	// ByTenant counts the jobs by tenant (-tenants); WrongTenant ones
	// ended with another tenant than the one submitted.
	ByTenant    map[string]int `json:"by_tenant,omitempty"`
	WrongTenant int            `json:"wrong_tenant,omitempty"`
}

// Latency is per job, in seconds, from the job records.
type Latency struct {
	ToCreated Percentiles `json:"submit_to_created"`  // submission → the API job saved
	ToDone    Percentiles `json:"submit_to_terminal"` // submission → terminal state
	// Reconciled jobs had a create whose outcome was in doubt (dropped
	// connection, timeout, worker killed mid-call).
	Reconciled  int `json:"reconciled"`
	Adopted     int `json:"reconciled_adopted"`     // the API job was found and adopted
	Resubmitted int `json:"reconciled_resubmitted"` // nothing was created: submitted again
	// InDoubt is from the create call's start to the reconciliation that
	// settled it (the worker waits 3 s before it looks).
	InDoubt Percentiles `json:"in_doubt_to_settled"`
}

// Percentiles of a set of durations, in seconds.
type Percentiles struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	Max float64 `json:"max"`
}

func percentiles(ds []time.Duration) Percentiles {
	if len(ds) == 0 {
		return Percentiles{}
	}
	slices.Sort(ds)
	at := func(q float64) float64 { return roundSec(ds[min(len(ds)-1, int(q*float64(len(ds))))]) }
	return Percentiles{N: len(ds), P50: at(0.5), P95: at(0.95), Max: roundSec(ds[len(ds)-1])}
}

func (p Percentiles) String() string {
	if p.N == 0 {
		return "-"
	}
	return fmt.Sprintf("p50 %s  p95 %s  max %s", secs(p.P50), secs(p.P95), secs(p.Max))
}

// Creates are the stand-in's create counts, per job by prompt.
type Creates struct {
	CreateCalls int `json:"create_calls"` // POST /v1/videos received, faulted ones included
	JobsCreated int `json:"jobs_created"` // API jobs (paid generations)
	PerJobMax   int `json:"per_job_max"`
	JobsWithOne int `json:"jobs_with_one"`
	// JobsWithNone were never created at the API.
	JobsWithNone int `json:"jobs_with_none"`
	// Duplicate is the creates beyond one per job.
	Duplicate     int      `json:"duplicate"`
	DuplicateJobs []string `json:"duplicate_jobs,omitempty"`
	// Unadopted jobs were created at the API but their record has no
	// video id: a paid generation nobody tracks.
	Unadopted int `json:"unadopted"`
	// Foreign creates carry a prompt that no submitted job has.
	Foreign int `json:"foreign"`
	// SharedVideos are API jobs adopted by more than one job.
	SharedVideos int `json:"shared_videos"`
}

// Objects are the stored videos, checked on disk.
type Objects struct {
	Stored   int   `json:"stored"`   // jobs in state stored
	Verified int   `json:"verified"` // stored jobs whose file hashes to the API's sha256, of their own prompt
	Corrupt  int   `json:"corrupt"`  // stored jobs with a missing, short or wrong file, or another job's video
	Bytes    int64 `json:"bytes"`
	OnDisk   int   `json:"on_disk"` // object files in the storage directory
	// Duplicate counts jobs with more than one object file.
	Duplicate int `json:"duplicate"`
	// Extra objects are files that are no stored job's location.
	Extra     int      `json:"extra"`
	ExtraList []string `json:"extra_list,omitempty"`
	// TempFiles are ".tmp-*" files left by downloads cut short by a
	// SIGKILL (documented: never valid objects).
	TempFiles int `json:"temp_files"`
	Sidecars  int `json:"sidecars"`
	// ArchiveDocs are the jobs' archive documents (records/…).
	ArchiveDocs int `json:"archive_docs"`
}

// RedisRestart is one restart of Redis.
type RedisRestart struct {
	AtSec       float64 `json:"at_s"`
	Terminal    int     `json:"terminal_jobs_then"`
	Mode        string  `json:"mode"`
	DowntimeSec float64 `json:"downtime_s"`
	Err         string  `json:"err,omitempty"`
}

// Chaos is what the harness did to the system.
type Chaos struct {
	Kills           int            `json:"kills"`
	KillList        []Kill         `json:"kill_list,omitempty"`
	WorkersStarted  int            `json:"workers_started"`
	UnexpectedExits []Exit         `json:"unexpected_exits,omitempty"`
	RedisRestarts   []RedisRestart `json:"redis_restarts,omitempty"`
	KilledAtStop    int            `json:"workers_killed_at_stop"` // did not stop within SHUTDOWN_TIMEOUT + 5 s
}

// Faults are the faults injected, as counted by the stand-in and the
// harness.
type Faults struct {
	API            map[string]int `json:"api"` // 5xx, 429, drop, truncate
	TimeoutsBefore int64          `json:"timeouts_before_api"`
	TimeoutsAfter  int64          `json:"timeouts_after_api"`
	WebhookLost    int            `json:"webhooks_lost"`
	WebhookDup     int            `json:"webhooks_duplicated"`
	WebhookBadSig  int            `json:"webhooks_wrong_signature"`
}

// Webhooks are the stand-in's delivery counts and the receiver's verdicts.
type Webhooks struct {
	Events            int               `json:"events"`
	Attempts          int               `json:"attempts"`
	Delivered         int               `json:"delivered"`
	Failed            int               `json:"failed"`
	Retried           int               `json:"retried"`
	FailedPermanently int               `json:"failed_permanently"`
	Pending           int               `json:"pending"`
	Receiver          map[string]string `json:"receiver,omitempty"` // videoworker's fleet-wide counters
}

// Problem is one job that went wrong.
type Problem struct {
	JobID   string   `json:"job_id"`
	Kind    string   `json:"kind"`
	Detail  string   `json:"detail"`
	State   string   `json:"state,omitempty"`
	VideoID string   `json:"video_id,omitempty"`
	Record  string   `json:"record,omitempty"` // the status command's summary
	History []string `json:"history,omitempty"`
}

const maxProblems = 25

// writeJSON writes r to path, creating the directory.
func (r *Report) writeJSON(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// writeText writes the human report.
func (r *Report) writeText(w io.Writer) {
	c := r.Config
	fmt.Fprintf(w, "\n=== soak report: %s ===\n", r.Verdict)
	kills := "no kills"
	if c.KillEvery != "0s" {
		kills = fmt.Sprintf("SIGKILL a worker every %s until %.0f%% of jobs are terminal", c.KillEvery, 100*c.KillUntil)
		if c.MaxKills > 0 {
			kills += fmt.Sprintf(" (at most %d)", c.MaxKills)
		}
	}
	fmt.Fprintf(w, "config   %d jobs, %d workers x %d, %s, %d Redis restarts (%s), drain timeout %s, seed %d\n",
		c.Jobs, c.Workers, c.Concurrency, kills, c.RedisRestarts, c.RedisMode, c.DrainTimeout, c.Seed)
	fmt.Fprintf(w, "         models %s; AISTATS_TIMEOUT %s; API faults 5xx %.0f%%, 429 %.0f%%, drop %.0f%%, truncate %.0f%%, timeout %.0f%%, fail %.1f%%, expire %.1f%%\n",
		strings.Join(c.Models, ", "), c.APITimeout, 100*c.API.ServerErrorRate, 100*c.API.RateLimitRate, 100*c.API.DropRate, 100*c.API.TruncateRate,
		100*c.API.TimeoutRate, 100*c.API.FailRate, 100*c.API.ExpireRate)
	if c.Webhooks.On {
		fmt.Fprintf(w, "         webhooks on: lost %.0f%%, duplicated %.0f%%, wrong signature %.0f%%\n",
			100*c.Webhooks.DropRate, 100*c.Webhooks.DuplicateRate, 100*c.Webhooks.WrongSecretRate)
	}
	fmt.Fprintf(w, "machine  %d CPUs, %s/%s, %s, redis %s\n\n", r.Machine.CPUs, r.Machine.OS, r.Machine.Arch, r.Machine.GoVersion, r.Machine.RedisVersion)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k string, v any, note string) { fmt.Fprintf(tw, "  %s\t%v\t%s\n", k, v, note) }
	fmt.Fprintln(tw, "jobs\t\t")
	row("submitted", r.Jobs.Submitted, fmt.Sprintf("(%d Submit retries)", r.Jobs.SubmitRetries))
	for _, s := range slices.Sorted(maps.Keys(r.Jobs.ByState)) {
		row("  "+s, r.Jobs.ByState[s], "")
	}
	for _, code := range slices.Sorted(maps.Keys(r.Jobs.FailedByCode)) {
		row("  failed: "+code, r.Jobs.FailedByCode[code], "")
	}
	row("lost", r.Jobs.Lost, mark(r.Jobs.Lost == 0)+fmt.Sprintf(" (%d without a record)", r.Jobs.Missing))
	row("unexpected failures", r.Jobs.UnexpectedFailures, "(failed for another reason than the API's own)")
	row("archived by retention", r.Jobs.Archived, fmt.Sprintf("(%d of them forgotten, read from their archives; retention %s, sweep every %s; %d bad archives) %s",
		r.Jobs.Forgotten, r.Config.Retention, r.Config.RetentionSweep, r.Jobs.BadArchives, mark(r.Jobs.BadArchives == 0)))
	for _, t := range slices.Sorted(maps.Keys(r.Jobs.ByTenant)) {
		row("  tenant "+t, r.Jobs.ByTenant[t], "")
	}
	if r.Jobs.ByTenant != nil {
		row("wrong tenant", r.Jobs.WrongTenant, mark(r.Jobs.WrongTenant == 0))
	}
	fmt.Fprintln(tw, "latency\t\t")
	row("submit → created", r.Latency.ToCreated, "")
	row("submit → terminal", r.Latency.ToDone, "")
	row("in-doubt creates", r.Latency.Reconciled, fmt.Sprintf("(%d adopted, %d submitted again)", r.Latency.Adopted, r.Latency.Resubmitted))
	row("in doubt → settled", r.Latency.InDoubt, "(the worker waits 3 s before reconciling)")
	fmt.Fprintln(tw, "creates\t\t")
	row("create calls", r.Creates.CreateCalls, "")
	row("API jobs created", r.Creates.JobsCreated, "")
	row("jobs created once", r.Creates.JobsWithOne, "")
	row("jobs never created", r.Creates.JobsWithNone, "")
	row("per job, max", r.Creates.PerJobMax, mark(r.Creates.PerJobMax <= 1))
	row("duplicate creates", r.Creates.Duplicate, mark(r.Creates.Duplicate == 0))
	row("unadopted creates", r.Creates.Unadopted, mark(r.Creates.Unadopted == 0))
	row("foreign creates", r.Creates.Foreign, mark(r.Creates.Foreign == 0))
	row("videos shared by jobs", r.Creates.SharedVideos, mark(r.Creates.SharedVideos == 0))
	fmt.Fprintln(tw, "objects\t\t")
	row("stored", r.Objects.Stored, "")
	row("verified by sha256", r.Objects.Verified, mark(r.Objects.Verified == r.Objects.Stored))
	row("corrupt", r.Objects.Corrupt, mark(r.Objects.Corrupt == 0))
	row("on disk", r.Objects.OnDisk, fmt.Sprintf("(%d bytes stored)", r.Objects.Bytes))
	row("duplicate objects", r.Objects.Duplicate, mark(r.Objects.Duplicate == 0))
	row("extra objects", r.Objects.Extra, mark(r.Objects.Extra == 0))
	row("temp files left", r.Objects.TempFiles, "(downloads cut by SIGKILL; never valid objects)")
	fmt.Fprintln(tw, "chaos\t\t")
	row("workers SIGKILLed", r.Chaos.Kills, fmt.Sprintf("(%d worker processes started)", r.Chaos.WorkersStarted))
	row("unexpected worker exits", len(r.Chaos.UnexpectedExits), "")
	row("Redis restarts", len(r.Chaos.RedisRestarts), restartsNote(r.Chaos.RedisRestarts))
	fmt.Fprintln(tw, "faults injected\t\t")
	for _, k := range slices.Sorted(maps.Keys(r.Faults.API)) {
		row("API "+k, r.Faults.API[k], "")
	}
	row("API timeouts", r.Faults.TimeoutsBefore+r.Faults.TimeoutsAfter, fmt.Sprintf("(%d before the API, %d after it answered)", r.Faults.TimeoutsBefore, r.Faults.TimeoutsAfter))
	if c.Webhooks.On {
		row("webhooks lost", r.Faults.WebhookLost, "")
		row("webhooks duplicated", r.Faults.WebhookDup, "")
		row("webhooks wrongly signed", r.Faults.WebhookBadSig, "")
		row("webhook events", r.Webhooks.Events, fmt.Sprintf("(%d attempts, %d delivered, %d failed, %d given up)", r.Webhooks.Attempts, r.Webhooks.Delivered, r.Webhooks.Failed, r.Webhooks.FailedPermanently))
	}
	if r.Budget.On {
		row("budget "+r.Budget.Model, r.Budget.Paid, fmt.Sprintf("jobs paid, %d refused budget_exceeded; settled %s of a %s day budget (a job: %s)",
			r.Budget.Exceeded, r.Budget.SettledUSD, r.Budget.LimitUSD, r.Budget.JobEstimateUSD))
	}
	if r.Callbacks.On {
		row("callback events", r.Callbacks.Events, fmt.Sprintf("(%d requests, %d repeats of an event, %d badly signed, %d terminal jobs without theirs)", r.Callbacks.Requests, r.Callbacks.Duplicates, r.Callbacks.BadSignature, r.Callbacks.Missing))
	}
	fmt.Fprintln(tw, "timings\t\t")
	row("setup", secs(r.Timings.SetupSec), fmt.Sprintf("(build %s)", secs(r.Timings.BuildSec)))
	row("submit", secs(r.Timings.SubmitSec), "")
	row("drain", secs(r.Timings.DrainSec), fmt.Sprintf("(first submission to last terminal job; %s after the last submission; %.1f jobs/s)", secs(r.Timings.DrainAfterSubmitSec), r.Timings.JobsPerSec))
	row("verify", secs(r.Timings.VerifySec), "")
	row("total", secs(r.Timings.TotalSec), "")
	tw.Flush()

	if len(r.Problems) > 0 {
		fmt.Fprintf(w, "\nproblems (%d, first %d):\n", r.ProblemsTotal, len(r.Problems))
		for _, p := range r.Problems {
			fmt.Fprintf(w, "  %s  %s: %s\n", p.JobID, p.Kind, p.Detail)
			if p.Record != "" {
				for _, l := range strings.Split(p.Record, "\n") {
					fmt.Fprintf(w, "    %s\n", l)
				}
			}
			for _, h := range p.History {
				fmt.Fprintf(w, "      %s\n", h)
			}
		}
	}
	for _, e := range r.Chaos.UnexpectedExits {
		fmt.Fprintf(w, "\nworker %s (pid %d) exited on its own at +%.1fs: %s\n    %s\n", e.Worker, e.PID, e.AtSec, e.Err, strings.ReplaceAll(e.LogTail, "\n", "\n    "))
	}
	for _, s := range r.Warnings {
		fmt.Fprintf(w, "\nwarning: %s", s)
	}
	if len(r.Warnings) > 0 {
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "\nverdict: %s", r.Verdict)
	if len(r.Failures) > 0 {
		fmt.Fprintf(w, " — %s", strings.Join(r.Failures, "; "))
	}
	fmt.Fprintln(w)
	if r.WorkDir != "" {
		fmt.Fprintf(w, "work directory kept: %s (logs/, redis/, videos/)\n", r.WorkDir)
	}
}

func mark(ok bool) string {
	if ok {
		return "ok"
	}
	return "FAIL"
}

func secs(s float64) string {
	return (time.Duration(s * float64(time.Second))).Round(100 * time.Millisecond).String()
}

func restartsNote(rs []RedisRestart) string {
	var parts []string
	for _, r := range rs {
		s := fmt.Sprintf("+%.0fs at %d terminal, down %.1fs", r.AtSec, r.Terminal, r.DowntimeSec)
		if r.Err != "" {
			s += " (" + r.Err + ")"
		}
		parts = append(parts, s)
	}
	if len(parts) == 0 {
		return ""
	}
	return "(" + strings.Join(parts, "; ") + ")"
}
