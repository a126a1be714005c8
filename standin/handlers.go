package standin

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// lookupLocked finds a live job or returns the documented 404.
func (s *Server) lookupLocked(id string) (*job, *apiError) {
	j := s.byID[id]
	switch {
	case j == nil:
		return nil, notFound("", "video_not_found_or_not_owned")
	case j.deleted:
		return nil, notFound(id, "video_deleted")
	}
	return j, nil
}

// snapshotOf takes a snapshot of live job id at now.
func (s *Server) snapshotOf(id string) (snapshot, time.Time, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	j, e := s.lookupLocked(id)
	if e != nil {
		return snapshot{}, now, e
	}
	return s.snapshotLocked(j, now), now, nil
}

func (s *Server) handleGet(w http.ResponseWriter, c *call) {
	sn, now, e := s.snapshotOf(c.id)
	if e != nil {
		writeError(w, e)
		return
	}
	s.ensureSHA(&sn)
	writeJSON(w, http.StatusOK, s.render(&sn, c.base, now))
}

func (s *Server) handleDelete(w http.ResponseWriter, c *call) {
	s.mu.Lock()
	j, e := s.lookupLocked(c.id)
	if e == nil {
		if st, _ := s.statusLocked(j, s.now()); !st.terminal() {
			e = validationError("only a terminal video can be deleted; this one is "+st.String(),
				detail{Path: []any{"status"}, Code: "custom", Message: "video is " + st.String()})
			e.reason, e.videoID, e.videoStatus = "video_delete_requires_terminal_status", c.id, st.String()
		} else {
			j.deleted = true
		}
	}
	s.mu.Unlock()
	if e != nil {
		writeError(w, e)
		return
	}
	s.log.Debug("standin video deleted", "video_id", c.id)
	writeJSON(w, http.StatusOK, map[string]any{"id": c.id, "object": "video.deleted", "deleted": true})
}

func (s *Server) handleCancel(w http.ResponseWriter, c *call) {
	s.mu.Lock()
	_, e := s.lookupLocked(c.id)
	s.mu.Unlock()
	if e == nil {
		e = &apiError{status: http.StatusNotImplemented, code: "not_implemented_yet", reason: "video_cancellation_disabled",
			description: "video cancellation is not available", videoID: c.id}
	}
	writeError(w, e)
}

type listJSON struct {
	Object  string      `json:"object"`
	Data    []videoJSON `json:"data"`
	FirstID *string     `json:"first_id"`
	LastID  *string     `json:"last_id"`
	HasMore bool        `json:"has_more"`
}

// handleList serves GET /v1/videos (reference 3.4). Deleted jobs are left
// out. It walks the creation-ordered slice from the cursor, so a page costs
// O(limit) without a status filter and at most one pass with one.
func (s *Server) handleList(w http.ResponseWriter, r *http.Request, c *call) {
	q := r.URL.Query()
	var details []detail
	bad := func(name, msg string) {
		details = append(details, detail{Path: []any{name}, Code: "invalid_query", Message: msg})
	}
	limit := 50
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 200 {
			bad("limit", "limit must be an integer between 1 and 200")
		}
		limit = n
	}
	desc := true
	switch q.Get("order") {
	case "", "desc":
	case "asc":
		desc = false
	default:
		bad("order", "order must be asc or desc")
	}
	var want [len(statusNames)]bool
	filter := false
	for _, v := range q["status"] {
		for name := range strings.SplitSeq(v, ",") {
			name = strings.ToLower(strings.TrimSpace(name))
			if name == "" {
				continue
			}
			st, ok := statusAliases[name]
			if !ok {
				bad("status", "unknown status "+strconv.Quote(name))
				continue
			}
			want[st], filter = true, true
		}
	}
	after := q.Get("after")

	s.mu.Lock()
	now := s.now()
	start, step := len(s.jobs)-1, -1
	if !desc {
		start, step = 0, 1
	}
	if after != "" {
		if j := s.byID[after]; j != nil {
			start = j.seq + step
		} else {
			bad("after", "unknown cursor "+strconv.Quote(after))
		}
	}
	if len(details) > 0 {
		s.mu.Unlock()
		writeError(w, validationError("invalid list query: "+details[0].Message, details...))
		return
	}
	var snaps []snapshot
	hasMore := false
	for i := start; i >= 0 && i < len(s.jobs); i += step {
		j := s.jobs[i]
		if j.deleted {
			continue
		}
		sn := s.snapshotLocked(j, now)
		if filter && !want[sn.status] {
			continue
		}
		if len(snaps) == limit {
			hasMore = true
			break
		}
		snaps = append(snaps, sn)
	}
	s.mu.Unlock()

	for i := range snaps {
		s.ensureSHA(&snaps[i])
	}
	out := listJSON{Object: "list", Data: make([]videoJSON, 0, len(snaps)), HasMore: hasMore}
	for i := range snaps {
		out.Data = append(out.Data, s.render(&snaps[i], c.base, now))
	}
	if len(snaps) > 0 {
		out.FirstID, out.LastID = &snaps[0].id, &snaps[len(snaps)-1].id
	}
	writeJSON(w, http.StatusOK, out)
}

// handleDownloadURL serves POST /v1/videos/{id}/download_url (reference 3.7).
func (s *Server) handleDownloadURL(w http.ResponseWriter, r *http.Request, c *call) {
	body, e := readBody(w, r)
	var m map[string]json.RawMessage
	if e == nil {
		m, e = parseObject(emptyAsObject(body))
	}
	if e != nil {
		writeError(w, e)
		return
	}
	var details []detail
	f := fields{m: m, details: &details}
	f.strict(func(k string) bool { return k == "index" || k == "ttl_seconds" || k == "disposition" })
	index, _ := intRange(f, "index", 0, 1<<31-1)
	ttl := int64(defaultLinkTTL / time.Second)
	if n, ok := intRange(f, "ttl_seconds", 1, 1<<31-1); ok {
		ttl = min(max(n, 60), 3600)
	}
	disposition := "attachment"
	if d, ok := oneOf(f, "disposition", []string{"attachment", "inline"}); ok {
		disposition = d
	}

	sn, now, nf := s.snapshotOf(c.id)
	switch {
	case nf != nil:
		writeError(w, nf)
		return
	case index >= int64(sn.outputs):
		details = append(details, detail{Path: []any{"index"}, Code: "out_of_range",
			Message: "index must be below " + strconv.Itoa(int(sn.outputs))})
	}
	if len(details) > 0 {
		e := validationError("invalid download_url request: "+details[0].Message, details...)
		e.videoID = c.id
		writeError(w, e)
		return
	}
	if sn.status != statusCompleted {
		e := validationError("a download link needs a completed video; this one is " + sn.status.String())
		e.reason, e.videoID, e.videoStatus = "video_download_requires_completed_status", c.id, sn.status.String()
		writeError(w, e)
		return
	}
	expires := now.Add(time.Duration(ttl) * time.Second).Unix()
	writeJSON(w, http.StatusOK, map[string]any{
		"download_url": s.signedURL(c.base, c.id, int(index), disposition, expires),
		"expires_at":   expires,
	})
}

// handleContent serves GET /v1/videos/{id}/content (reference section 6):
// the output's bytes, streamed, with Range ignored. A bad index is 400
// (not a non-negative integer) or 404 not_found reason
// video_output_not_found (no such output). Bearer requests for a job whose
// output.access is "signed_url" get 400 not_supported.
func (s *Server) handleContent(w http.ResponseWriter, r *http.Request, c *call) {
	index := 0
	if c.link != nil {
		index = c.link.Index
	} else if v := r.URL.Query().Get("index"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			e := validationError("index must be a non-negative integer",
				detail{Path: []any{"index"}, Code: "invalid_query", Message: "index must be a non-negative integer"})
			e.videoID = c.id
			writeError(w, e)
			return
		}
		index = n
	}
	sn, _, e := s.snapshotOf(c.id)
	if e == nil {
		e = contentProblem(&sn, index, c.link != nil)
	}
	if e != nil {
		writeError(w, e)
		return
	}

	h := w.Header()
	h.Set("Content-Type", "video/mp4")
	h.Set("Content-Length", strconv.FormatInt(s.cfg.ContentSize, 10))
	h.Set("Cache-Control", "private, no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	if c.link != nil {
		h.Set("Content-Disposition", c.link.Disposition+`; filename="`+c.id+`.mp4"`)
	}
	w.WriteHeader(http.StatusOK)
	size := s.cfg.ContentSize
	if c.truncate {
		size /= 2
	}
	n, _ := writeContent(w, s.cfg.Seed, c.id, index, size) // a write error means the client left
	if !c.dropped {
		s.mu.Lock()
		s.stats.BytesServed += n
		s.mu.Unlock()
	}
	if c.truncate {
		s.countFault(FaultTruncate, c)
		_ = http.NewResponseController(w).Flush()
		abortConnection(w)
	}
}

// contentProblem is the error answer for a content request, or nil.
func contentProblem(sn *snapshot, index int, signed bool) *apiError {
	if index >= int(sn.outputs) {
		return &apiError{status: http.StatusNotFound, code: "not_found", reason: "video_output_not_found",
			description: "video has no output " + strconv.Itoa(index), videoID: sn.id}
	}
	notReady := func(reason, desc string) *apiError {
		return &apiError{status: http.StatusConflict, code: "not_ready", reason: reason, description: desc,
			videoID: sn.id, videoStatus: sn.status.String()}
	}
	switch sn.status {
	case statusQueued, statusProcessing:
		return notReady("video_not_ready", "video is not ready yet; poll until status is completed")
	case statusFailed:
		return notReady("video_generation_failed", "video generation failed")
	case statusExpired:
		return notReady("video_expired", "video has expired")
	case statusCancelled:
		return notReady("video_cancelled", "video was cancelled")
	}
	if !signed && !sn.access.bytes() {
		return &apiError{status: http.StatusBadRequest, code: "not_supported", reason: "video_content_unsupported",
			description: `output.access is "signed_url": use download_url`, videoID: sn.id}
	}
	return nil
}

// handleModels serves GET /v1/videos/models (reference 3.5). The optional
// params filter keeps the models that support every named parameter.
func (s *Server) handleModels(w http.ResponseWriter, r *http.Request) {
	var params []string
	for _, v := range r.URL.Query()["params"] {
		for p := range strings.SplitSeq(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				params = append(params, p)
			}
		}
	}
	data := []modelJSON{}
	for _, m := range modelCatalog() {
		if slices.IndexFunc(params, func(p string) bool { return !m.supports(p) }) < 0 {
			// The price this server bills (Config.PricePerSecond), or the
			// configured raw pricing.
			m.Pricing = pricingJSON{Currency: "usd", Unit: "second", PerSecondUSD: usd(s.pricePerSecondNanos(m.Model))}
			if raw, ok := s.cfg.ModelPricing[m.Model]; ok {
				m.Pricing = json.RawMessage(raw)
			}
			data = append(data, m)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": data})
}
