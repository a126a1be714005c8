// Package storage is object storage for finished videos.
//
// Everything that stores or serves a video goes through the [Store]
// interface: keys are relative, slash-separated names checked by
// [ValidateKey] and usually built with [RenderKey]; Put streams with
// constant memory, verifies an expected size and sha256 (an *[IntegrityError]
// on mismatch) and makes an object visible only once it is complete.
//
// Local disk ([Disk]) is the default backend. An S3 backend comes later in
// its own change: it implements the same interface and must pass the same
// conformance suite (package storagetest). [Open] picks a backend from a
// URL such as "file:///var/lib/videoworker/videos" or a plain path; "s3://"
// URLs are recognised and refused with an error until that backend lands.
package storage
