package standin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

const maxPromptRunes = 32000

// createFields are the accepted top-level fields of POST /v1/videos
// (reference 3.1, including the later-revision optional ones).
var createFields = map[string]bool{
	"model": true, "prompt": true, "duration": true, "seconds": true, "size": true,
	"resolution": true, "aspect_ratio": true, "seed": true, "sample_count": true,
	"negative_prompt": true, "generate_audio": true, "enhance_prompt": true,
	"compression_quality": true, "person_generation": true, "resize_mode": true,
	"input_references": true, "input_reference": true, "frame_images": true,
	"input_audio_duration": true, "provider_params": true, "provider_options": true,
	"output": true, "webhook": true, "provider": true,
}

// gatewayControlled are keys that provider_params/provider_options may not
// set (reference 3.1, later source).
var gatewayControlled = []string{
	"model", "prompt", "duration", "seconds", "size", "resolution", "aspect_ratio",
	"callback_url", "webhook", "output", "sample_count",
}

var (
	resolutions  = map[string]int32{"480p": 480, "720p": 720, "1080p": 1080, "1K": 1080, "2K": 1440, "4K": 2160}
	soraSeconds  = map[string]int32{"4": 4, "8": 8, "12": 12, "16": 16, "20": 20}
	sizeRE       = regexp.MustCompile(`^([0-9]{2,5})x([0-9]{2,5})$`)
	aspectRE     = regexp.MustCompile(`^([1-9][0-9]{0,2}):([1-9][0-9]{0,2})$`)
	refTypes     = []string{"image_url", "video_url", "audio_url"}
	refRoles     = []string{"first_frame", "last_frame", "reference", "source", "mask"}
	eventPhases  = []string{"created", "progress", "completed", "failed", "cancelled", "expired", "status_changed"}
	defaultHooks = []string{"video.completed", "video.failed", "video.cancelled", "video.expired"}
)

const defaultSeconds = 8

// createParams is a validated create request, reduced to what a job keeps.
type createParams struct {
	model, prompt string
	seconds       int32
	size          string
	width, height int32
	samples       uint8
	audio         int8
	access        accessMode
	webhook       *webhook
}

// fields decodes a JSON object's members one by one and collects every
// problem as a detail, so one answer lists them all.
type fields struct {
	m       map[string]json.RawMessage
	prefix  []any
	details *[]detail
}

func (f fields) add(path []any, code, format string, args ...any) {
	*f.details = append(*f.details, detail{Path: path, Code: code, Message: fmt.Sprintf(format, args...)})
}

func (f fields) path(name string) []any {
	return append(slices.Clip(f.prefix), name)
}

// has reports whether name is present and not null (null counts as absent).
func (f fields) has(name string) bool {
	raw, ok := f.m[name]
	return ok && !bytes.Equal(bytes.TrimSpace(raw), []byte("null"))
}

// strict reports every member not in allowed.
func (f fields) strict(allowed func(string) bool) {
	keys := make([]string, 0, len(f.m))
	for k := range f.m {
		if !allowed(k) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		f.add(f.path(k), "unrecognized_keys", "unrecognized key %q", k)
	}
}

// object returns member name as a nested object, or ok=false.
func (f fields) object(name string) (fields, bool) {
	m, ok := decode[map[string]json.RawMessage](f, name, "object")
	if !ok || m == nil {
		return fields{}, false
	}
	return fields{m: m, prefix: f.path(name), details: f.details}, true
}

// decode unmarshals member name into T; ok=false when absent, null or of
// the wrong type (reported).
func decode[T any](f fields, name, want string) (T, bool) {
	var v T
	if !f.has(name) {
		return v, false
	}
	if err := json.Unmarshal(f.m[name], &v); err != nil {
		f.add(f.path(name), "invalid_type", "%s must be %s", name, want)
		return v, false
	}
	return v, true
}

func intRange(f fields, name string, lo, hi int64) (int64, bool) {
	n, ok := decode[int64](f, name, "an integer")
	if ok && (n < lo || n > hi) {
		f.add(f.path(name), "out_of_range", "%s must be between %d and %d", name, lo, hi)
		return n, false
	}
	return n, ok
}

func requiredString(f fields, name string) string {
	if !f.has(name) {
		f.add(f.path(name), "invalid_type", "%s is required", name)
		return ""
	}
	s, ok := decode[string](f, name, "a string")
	if ok && strings.TrimSpace(s) == "" {
		f.add(f.path(name), "too_small", "%s must not be empty", name)
	}
	return s
}

func oneOf(f fields, name string, allowed []string) (string, bool) {
	s, ok := decode[string](f, name, "a string")
	if ok && !slices.Contains(allowed, s) {
		f.add(f.path(name), "invalid_enum_value", "%s must be one of %s", name, strings.Join(allowed, ", "))
		return s, false
	}
	return s, ok
}

// parseCreate validates a create body (reference 3.1, 7 and 9) as the
// inline webhook revision does.
func parseCreate(body []byte) (createParams, *apiError) { return parseCreateFor(body, nil) }

// parseCreateFor validates a create body; endpoints non-nil selects the
// endpoint webhook revision, with these endpoints (see parseWebhook).
func parseCreateFor(body []byte, endpoints map[string]WebhookEndpoint) (createParams, *apiError) {
	var p createParams
	var details []detail
	f := fields{details: &details}
	var e *apiError
	if f.m, e = parseObject(body); e != nil {
		return p, e
	}
	f.strict(func(k string) bool { return createFields[k] })

	p.model = requiredString(f, "model")
	p.prompt = requiredString(f, "prompt")
	if utf8.RuneCountInString(p.prompt) > maxPromptRunes {
		f.add(f.path("prompt"), "too_big", "prompt must be at most %d characters", maxPromptRunes)
	}

	p.seconds = defaultSeconds
	if d, ok := intRange(f, "duration", 1, 120); ok {
		p.seconds = int32(d)
	}
	if f.has("seconds") {
		// Sora-style string; a bare integer is accepted too.
		s, isString := string(f.m["seconds"]), true
		if _, err := strconv.Atoi(s); err != nil {
			s, isString = decode[string](f, "seconds", `one of "4", "8", "12", "16", "20"`)
		}
		n, ok := soraSeconds[s]
		switch {
		case !isString:
		case !ok:
			f.add(f.path("seconds"), "invalid_enum_value", `seconds must be one of "4", "8", "12", "16", "20"`)
		case f.has("duration"):
			f.add(f.path("seconds"), "custom", "seconds cannot be combined with duration")
		default:
			p.seconds = n
		}
	}

	p.width, p.height, p.size = 1280, 720, "720p"
	size, hasSize := decode[string](f, "size", "a string like 1280x720")
	res, hasRes := decode[string](f, "resolution", "a string")
	aspect, hasAspect := decode[string](f, "aspect_ratio", "a string like 16:9")
	if hasSize {
		if m := sizeRE.FindStringSubmatch(size); m == nil {
			f.add(f.path("size"), "invalid_string", "size must be WIDTHxHEIGHT, e.g. 1280x720")
		} else {
			w, _ := strconv.Atoi(m[1])
			h, _ := strconv.Atoi(m[2])
			if w < 16 || h < 16 || w > 8192 || h > 8192 {
				f.add(f.path("size"), "out_of_range", "size dimensions must be between 16 and 8192")
			}
			p.width, p.height, p.size = int32(w), int32(h), size
		}
	}
	if f.has("size") && (f.has("resolution") || f.has("aspect_ratio")) {
		f.add(f.path("size"), "custom", "size cannot be combined with resolution or aspect_ratio")
	}
	short := int32(720)
	if hasRes {
		if h, ok := resolutions[res]; ok {
			short, p.size = h, res
		} else {
			f.add(f.path("resolution"), "invalid_enum_value", "resolution must be one of 480p, 720p, 1080p, 1K, 2K, 4K")
		}
	}
	aw, ah := int32(16), int32(9)
	if hasAspect {
		if m := aspectRE.FindStringSubmatch(aspect); m == nil {
			f.add(f.path("aspect_ratio"), "invalid_string", "aspect_ratio must be W:H, e.g. 16:9")
		} else {
			a, _ := strconv.Atoi(m[1])
			b, _ := strconv.Atoi(m[2])
			aw, ah = int32(a), int32(b)
		}
	}
	if !hasSize {
		if aw >= ah {
			p.width, p.height = evenRound(short*aw, ah), short
		} else {
			p.width, p.height = short, evenRound(short*ah, aw)
		}
	}

	decode[int64](f, "seed", "an integer")
	p.samples = 1
	if n, ok := intRange(f, "sample_count", 1, 4); ok {
		p.samples = uint8(n)
	}
	for _, name := range []string{"negative_prompt", "person_generation", "resize_mode"} {
		decode[string](f, name, "a string")
	}
	p.audio = -1
	if b, ok := decode[bool](f, "generate_audio", "a boolean"); ok {
		p.audio = 0
		if b {
			p.audio = 1
		}
	}
	decode[bool](f, "enhance_prompt", "a boolean")
	intRange(f, "compression_quality", 0, 100)

	checkReferences(f)
	if ref, ok := f.object("input_reference"); ok && !ref.has("file_id") && !ref.has("image_url") {
		ref.add(ref.prefix, "custom", "input_reference needs file_id or image_url")
	}
	if frames, ok := decode[[]map[string]json.RawMessage](f, "frame_images", "an array of objects"); ok {
		if len(frames) < 1 || len(frames) > 2 {
			f.add(f.path("frame_images"), "out_of_range", "frame_images must hold 1 or 2 items")
		}
		for i, m := range frames {
			item := fields{m: m, prefix: append(f.path("frame_images"), i), details: f.details}
			oneOf(item, "type", []string{"image_url"})
			if !item.has("image_url") {
				item.add(item.path("image_url"), "invalid_type", "image_url is required")
			}
		}
	}
	for _, name := range []string{"provider_params", "provider_options"} {
		if pp, ok := f.object(name); ok {
			for _, k := range gatewayControlled {
				if _, set := pp.m[k]; set {
					pp.add(pp.path(k), "custom", "%s is controlled by the gateway and cannot be set in %s", k, name)
				}
			}
		}
	}
	f.object("provider")
	if out, ok := f.object("output"); ok {
		out.strict(func(k string) bool { return k == "access" })
		if a, ok := oneOf(out, "access", accessNames[:]); ok {
			p.access = accessMode(slices.Index(accessNames[:], a))
		}
	}
	p.webhook = parseWebhook(f, endpoints)

	if len(details) > 0 {
		return createParams{}, validationError("invalid create request: "+details[0].Message, details...)
	}
	return p, nil
}

func evenRound(num, den int32) int32 {
	return (num/den + 1) &^ 1
}

// checkReferences validates input_references items and the audio rule.
func checkReferences(f fields) {
	refs, ok := decode[[]map[string]json.RawMessage](f, "input_references", "an array of objects")
	audio := 0
	for i, m := range refs {
		item := fields{m: m, prefix: append(f.path("input_references"), i), details: f.details}
		typ, _ := oneOf(item, "type", refTypes)
		if !item.has("type") {
			item.add(item.path("type"), "invalid_type", "type is required")
		}
		urlField := "media_url"
		if typ == "image_url" {
			urlField = "image_url"
		}
		item.strict(func(k string) bool { return k == "type" || k == "role" || k == "reference_type" || k == urlField })
		oneOf(item, "role", refRoles)
		decode[string](item, "reference_type", "a string")
		inner, ok := item.object(urlField)
		if !ok {
			if !item.has(urlField) {
				item.add(item.path(urlField), "invalid_type", "%s is required", urlField)
			}
			continue
		}
		u := requiredString(inner, "url")
		if urlField == "media_url" && u != "" && !strings.HasPrefix(u, "https://") {
			inner.add(inner.path("url"), "invalid_string", "media URLs must use https")
		}
		if typ == "audio_url" {
			audio++
		}
	}
	dur, hasDur := decode[float64](f, "input_audio_duration", "a number")
	if hasDur && (dur < 2 || dur > 20) {
		f.add(f.path("input_audio_duration"), "out_of_range", "input_audio_duration must be between 2 and 20 seconds")
	}
	switch {
	case !ok || audio == 0:
	case audio > 1:
		f.add(f.path("input_references"), "custom", "audio-driven jobs take exactly one audio_url item")
	case !f.has("input_audio_duration"):
		f.add(f.path("input_audio_duration"), "invalid_type", "input_audio_duration is required with an audio_url item")
	}
}

// parseWebhook validates the webhook member (reference section 7). With
// endpoints nil it is the inline revision: {url, events?, secret?}, and
// endpoint_id is refused. Otherwise it is the newest revision (reference
// 3.1, "Revision drift"): {endpoint_id, events?} naming one of endpoints,
// whose URL and secret the deliveries use; an inline url or secret is
// refused with a validation error on the webhook field.
func parseWebhook(f fields, endpoints map[string]WebhookEndpoint) *webhook {
	wf, ok := f.object("webhook")
	if !ok {
		return nil
	}
	wf.strict(func(k string) bool { return k == "url" || k == "events" || k == "secret" || k == "endpoint_id" })
	hook := &webhook{events: defaultHooks}
	if endpoints != nil {
		for _, k := range []string{"url", "secret"} {
			if wf.has(k) {
				wf.add(wf.path(k), "unrecognized_keys", "webhook.%s is not accepted: subscribe a workspace webhook endpoint with webhook.endpoint_id", k)
			}
		}
		id := requiredString(wf, "endpoint_id")
		if ep, ok := endpoints[id]; ok {
			hook.url, hook.secret, hook.endpointID = ep.URL, ep.Secret, id
		} else if id != "" {
			wf.add(wf.path("endpoint_id"), "custom", "webhook.endpoint_id: no such webhook endpoint in this workspace")
		}
	} else {
		if wf.has("endpoint_id") {
			wf.add(wf.path("endpoint_id"), "custom", "webhook.endpoint_id (managed endpoints) is not supported by this API revision; use webhook.url")
		}
		hook.url = requiredString(wf, "url")
		if problem := checkWebhookURL(hook.url); hook.url != "" && problem != "" {
			wf.add(wf.path("url"), "invalid_string", "webhook.url %s", problem)
		}
		hook.secret, _ = decode[string](wf, "secret", "a string")
	}
	if events, ok := decode[[]string](wf, "events", "an array of strings"); ok {
		hook.events = normalizeEvents(events)
		if len(hook.events) == 0 {
			wf.add(wf.path("events"), "custom", "webhook.events needs at least one video event (job.* or video.* with a phase of %s)", strings.Join(eventPhases, ", "))
		}
	}
	return hook
}

// normalizeEvents maps job.X, video.X and bare X to video.X (canceled →
// cancelled), drops entries that are not video events and duplicates.
func normalizeEvents(in []string) []string {
	var out []string
	for _, e := range in {
		e = strings.ToLower(strings.TrimSpace(e))
		phase, ok := strings.CutPrefix(e, "job.")
		if !ok {
			phase, ok = strings.CutPrefix(e, "video.")
		}
		if !ok && strings.Contains(e, ".") {
			continue // another namespace, e.g. batch.completed
		}
		if phase == "canceled" {
			phase = "cancelled"
		}
		if name := "video." + phase; slices.Contains(eventPhases, phase) && !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out
}

// checkWebhookURL returns what is wrong with a webhook URL, or "". HTTPS is
// required except for http://localhost, http://127.0.0.1 and http://[::1];
// literal private, loopback, link-local, multicast and unspecified addresses
// and wildcard hosts are rejected.
func checkWebhookURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" || u.Opaque != "" {
		return "must be an absolute URL"
	}
	if u.User != nil {
		return "must not contain credentials"
	}
	host := u.Hostname()
	local := host == "localhost" || host == "127.0.0.1" || host == "::1"
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && local:
	case u.Scheme == "http":
		return "must use https (plain http only for localhost, 127.0.0.1 or [::1])"
	default:
		return "must use https"
	}
	if local {
		return ""
	}
	if strings.Contains(host, "*") {
		return "must not use a wildcard host"
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		ip = ip.Unmap()
		if ip.IsPrivate() || ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
			ip.IsInterfaceLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() {
			return "must not point at a private, loopback, link-local or wildcard address"
		}
	}
	return ""
}

// readBody reads a request body of at most maxBodyBytes (else 413
// payload_too_large, a status the reference leaves undocumented).
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, *apiError) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return nil, &apiError{status: http.StatusRequestEntityTooLarge, code: "payload_too_large",
			description: fmt.Sprintf("request body exceeds %d bytes", maxBodyBytes)}
	case err != nil:
		return nil, &apiError{status: http.StatusBadRequest, code: "invalid_json", description: "reading the request body failed"}
	}
	return body, nil
}

// emptyAsObject turns an empty body into {} for routes whose body is optional.
func emptyAsObject(body []byte) []byte {
	if len(bytes.TrimSpace(body)) == 0 {
		return []byte("{}")
	}
	return body
}

// parseObject decodes a body that must be a JSON object into its members:
// 400 invalid_json when it is empty or not JSON, 400 validation_error when
// it is JSON but not an object.
func parseObject(body []byte) (map[string]json.RawMessage, *apiError) {
	switch {
	case len(bytes.TrimSpace(body)) == 0:
		return nil, &apiError{status: http.StatusBadRequest, code: "invalid_json", description: "request body is empty"}
	case !json.Valid(body):
		return nil, &apiError{status: http.StatusBadRequest, code: "invalid_json", description: "request body is not valid JSON"}
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil || m == nil {
		return nil, validationError("request body must be a JSON object",
			detail{Path: []any{}, Code: "invalid_type", Message: "expected object"})
	}
	return m, nil
}

func (s *Server) handleCreate(w http.ResponseWriter, r *http.Request, c *call) {
	body, e := readBody(w, r)
	if e != nil {
		writeError(w, e)
		return
	}
	p, e := parseCreateFor(body, s.endpoints)
	if e != nil {
		writeError(w, e)
		return
	}
	s.mu.Lock()
	now := s.now()
	j := s.addJobLocked(p, r.Header.Get("Idempotency-Key"), now)
	s.watchLocked(j, c.base, now)
	snap := s.snapshotLocked(j, now)
	s.mu.Unlock()
	if j.hook != nil {
		s.wakeLoop()
	}
	s.log.Debug("standin video created", "video_id", j.id, "model", j.model, "outcome", j.outcome.String(), "dropped", c.dropped)
	s.ensureSHA(&snap)
	writeJSON(w, http.StatusAccepted, s.render(&snap, c.base, now))
}

// addJobLocked creates a job from validated params and counts it.
func (s *Server) addJobLocked(p createParams, idemKey string, now time.Time) *job {
	id := newID("G-")
	for s.byID[id] != nil {
		id = newID("G-")
	}
	provider, _, ok := strings.Cut(p.model, "/")
	if !ok {
		provider = "unknown"
	}
	start := now.Add(s.cfg.QueuedFor)
	j := &job{
		id:        id,
		seq:       len(s.jobs),
		model:     p.model,
		provider:  provider,
		prompt:    p.prompt,
		idemKey:   idemKey,
		size:      p.size,
		width:     p.width,
		height:    p.height,
		seconds:   p.seconds,
		outputs:   p.samples,
		access:    p.access,
		audio:     p.audio,
		costNanos: s.pricePerSecondNanos(p.model) * int64(p.seconds) * int64(p.samples),
		createdAt: now,
		startAt:   start,
		endAt:     start.Add(s.cfg.ProcessingFor),
		outcome:   drawOutcome(s.cfg.Seed, id, s.cfg.FailRate, s.cfg.ExpireRate),
		webhook:   p.webhook,
	}
	s.jobs = append(s.jobs, j)
	s.byID[id] = j
	s.stats.JobsCreated++
	s.stats.JobsByIdempotencyKey[idemKey]++
	s.stats.JobsByPrompt[p.prompt]++
	return j
}
