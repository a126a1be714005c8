package standin

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// apiError is an error answer before it is written as the flat body of
// reference section 8.
type apiError struct {
	status      int
	code        string // machine code: "validation_error", "not_found", ...
	reason      string
	description string
	details     []detail
	videoID     string // also used as generation_id when set
	videoStatus string // the job's status, for the errors that report it
}

// detail is one entry of a validation error's details list, shaped like the
// zod issues the gateway source emits.
type detail struct {
	Path    []any  `json:"path"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// errorBody is the flat JSON error object of reference section 8.
type errorBody struct {
	Error        string   `json:"error"`
	StatusCode   int      `json:"status_code"`
	ErrorType    string   `json:"error_type"`
	ErrorOrigin  string   `json:"error_origin"`
	GenerationID string   `json:"generation_id"`
	Description  string   `json:"description"`
	Reason       string   `json:"reason,omitempty"`
	Details      []detail `json:"details,omitempty"`
	VideoID      string   `json:"video_id,omitempty"`
	Status       string   `json:"status,omitempty"`
}

func (e *apiError) body() errorBody {
	b := errorBody{
		Error:        e.code,
		StatusCode:   e.status,
		ErrorType:    "user",
		ErrorOrigin:  "user",
		GenerationID: e.videoID,
		Description:  e.description,
		Reason:       e.reason,
		Details:      e.details,
		VideoID:      e.videoID,
		Status:       e.videoStatus,
	}
	switch {
	case e.status == http.StatusTooManyRequests:
		b.ErrorOrigin = "gateway"
	case e.code == "upstream_error":
		b.ErrorType, b.ErrorOrigin = "system", "upstream"
	case e.status >= 500:
		b.ErrorType, b.ErrorOrigin = "system", "gateway"
	}
	if b.GenerationID == "" {
		b.GenerationID = newID("G-")
	}
	return b
}

func validationError(description string, details ...detail) *apiError {
	return &apiError{status: http.StatusBadRequest, code: "validation_error", description: description, details: details}
}

func notFound(id, reason string) *apiError {
	desc := "video not found"
	if reason == "video_deleted" {
		desc = "video was deleted"
	}
	return &apiError{status: http.StatusNotFound, code: "not_found", reason: reason, description: desc, videoID: id}
}

func writeError(w http.ResponseWriter, e *apiError) {
	writeJSON(w, e.status, e.body())
}

// writeJSON writes v with the given status; v must be marshalable (all
// values passed here are plain structs and maps).
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":"gateway_error","status_code":500,"error_type":"system","error_origin":"gateway","generation_id":"","description":"encoding the response failed"}`)
	}
	b = append(b, '\n')
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
