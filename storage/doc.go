// Package storage is object storage for finished videos.
//
// Everything that stores or serves a video goes through the [Store]
// interface: keys are relative, slash-separated names checked by
// [ValidateKey] and usually built with [RenderKey]; Put streams with
// constant memory, verifies an expected size and sha256 (an *[IntegrityError]
// on mismatch) and makes an object visible only once it is complete. Put
// never replaces an object of another owner ([OwnerMetadataKey],
// [ErrKeyConflict]), and RenderKey's encoding of ids is injective, so two
// jobs never share a key.
//
// Two backends implement it and pass the same conformance suite (package
// storagetest): local disk ([Disk], the default) and S3-compatible object
// storage ([S3]: AWS S3, MinIO, versitygw, Garage, …). [Open] and
// [OpenWith] pick one from a URL such as "file:///var/lib/videoworker/videos",
// a plain path, or "s3://bucket/prefix". Stores that can hand out
// time-limited download links implement [Presigner].
//
// Errors carry their class from where they are raised: [KindOf] reads it
// (a refused key is [KindInvalidKey] and permanent, a mismatch
// [KindIntegrity], a missing object [KindNotExist], anything else
// [KindOther] and worth retrying), so callers never read error text.
package storage
