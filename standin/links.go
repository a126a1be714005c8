package standin

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/url"
	"strconv"
)

// linkToken is the signed-link token of reference section 6; the field
// order is the documented one.
type linkToken struct {
	WorkspaceID string `json:"workspace_id"`
	VideoID     string `json:"video_id"`
	Index       int    `json:"index"`
	Disposition string `json:"disposition"`
}

func (s *Server) linkSignature(token, expires string) string {
	mac := hmac.New(sha256.New, s.signKey)
	mac.Write([]byte(token + "." + expires))
	return hex.EncodeToString(mac.Sum(nil))
}

// signedURL returns
// {base}/v1/videos/{id}/content?[index=N&]download_token=t&download_sig=s&expires_at=unix
// where t is base64url (no padding) of the token JSON and s the hex
// HMAC-SHA256 of t + "." + expires_at under the server's secret.
func (s *Server) signedURL(base, id string, index int, disposition string, expires int64) string {
	raw, _ := json.Marshal(linkToken{WorkspaceID: s.workspaceID, VideoID: id, Index: index, Disposition: disposition}) // plain struct
	t := base64.RawURLEncoding.EncodeToString(raw)
	exp := strconv.FormatInt(expires, 10)
	u := base + contentPath(id, index)
	if index > 0 {
		u += "&"
	} else {
		u += "?"
	}
	return u + "download_token=" + t + "&download_sig=" + s.linkSignature(t, exp) + "&expires_at=" + exp
}

// verifyLink returns the token of a valid, unexpired signed link for video
// id, or nil: a missing, bad or expired signature is ignored (the request
// then needs a bearer). An index in the URL must match the token's.
func (s *Server) verifyLink(q url.Values, id string) *linkToken {
	t, sig, exp := q.Get("download_token"), q.Get("download_sig"), q.Get("expires_at")
	if t == "" || sig == "" || exp == "" {
		return nil
	}
	expires, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || s.now().Unix() >= expires {
		return nil
	}
	if !hmac.Equal([]byte(sig), []byte(s.linkSignature(t, exp))) {
		return nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(t)
	if err != nil {
		return nil
	}
	var tok linkToken
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if dec.Decode(&tok) != nil || tok.VideoID != id || tok.WorkspaceID != s.workspaceID || tok.Index < 0 {
		return nil
	}
	if v := q.Get("index"); v != "" && v != strconv.Itoa(tok.Index) {
		return nil
	}
	if tok.Disposition != "inline" {
		tok.Disposition = "attachment"
	}
	return &tok
}
