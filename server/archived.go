package server

import (
	"context"

	"github.com/videoworker/videoworker/jobs"
	"github.com/videoworker/videoworker/storage"
)

// withArchive is an archived job as readers show it: once the retention
// sweep has archived a job (rec.ArchivedAt), its Redis record may be
// compact and its history is in the archive document; the record and
// history returned are the archive's with what Redis says since
// (jobs.Archive.With), and where the archive is. When the archive cannot
// be read, what Redis holds is returned, with the archive's address all
// the same.
func withArchive(ctx context.Context, st storage.Store, rec *jobs.Record, hist []jobs.Event) (*jobs.Record, []jobs.Event, string) {
	if rec.ArchivedAt.IsZero() || st == nil {
		return rec, hist, ""
	}
	loc := st.Location(jobs.ArchiveKey(rec.ID))
	a, err := jobs.LoadArchive(ctx, st, rec.ID)
	if err != nil {
		return rec, hist, loc
	}
	r, h := a.With(rec, hist)
	return r, h, loc
}
