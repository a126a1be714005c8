package storage

// SetS3CopyMax sets the largest single server-side copy of s, so that tests
// can exercise the multipart copy used beyond 5 GiB with small objects.
func SetS3CopyMax(s *S3, n int64) { s.copyMax = n }

// UseSidecars makes d keep metadata in sidecar files, as on a file system
// without user extended attributes.
func UseSidecars(d *Disk) { d.noXattr.Store(true) }

// UseNamedTemps makes d write data to ".tmp-*" files, as on a file system
// without O_TMPFILE.
func UseNamedTemps(d *Disk) { d.noUnnamed.Store(true) }

// MetaXattr is the extended attribute holding an object's metadata.
const MetaXattr = metaXattr
