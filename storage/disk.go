package storage

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Disk is a [Store] on the local file system, rooted at one directory. The
// object for key "videos/x.mp4" is the plain file <root>/videos/x.mp4, so
// operators can inspect and serve files directly.
//
// # Layout
//
// An object's metadata (size, sha256, content type and user metadata, as a
// JSON document) is kept with its bytes, in the file's extended attribute
// "user.videoworker.meta" (`getfattr -n user.videoworker.meta FILE` shows
// it). On a file system without user extended attributes, or for metadata
// too large for one, it is kept in a sidecar file <key>.meta next to the
// object instead, as earlier versions always did; objects with sidecars
// written by those versions remain readable. Put writes to temporary files
// named ".tmp-*" in the destination directory (the same file system, so
// the final rename is atomic). A crash can leave such files behind; they
// are never valid objects and may be deleted by an operator when no Put is
// running. Empty directories are left in place after Delete.
//
// Because of this layout Disk refuses, with an error wrapping
// [ErrInvalidKey], keys that [ValidateKey] accepts but where a segment
// starts with ".tmp-" or ends with ".meta". A key whose directory part names
// an existing object (Put "a/b" after Put "a") fails, as on any file system.
//
// # Writes
//
// Put streams into the temporary file while hashing and counting (an
// object larger than the 1 MiB buffer is read, hashed and written by three
// goroutines at once, in at most 3 MiB of buffers), checks the size and
// sha256, sets the metadata attribute, fsyncs the file, renames it into
// place and fsyncs the directory: the bytes and their metadata appear
// together, in one rename. Without attributes it writes and fsyncs a
// temporary sidecar and renames the sidecar into place before the data.
// Renames happen under a per-key lock, and Stat and Open take the same lock
// to open the data and read a sidecar as a pair, so within one process a
// reader never sees new data with an old sidecar or the reverse.
//
// # Owners
//
// Under the same lock, before anything is renamed, Put reads the metadata
// of the object it would replace and refuses ([ErrKeyConflict]) when it
// names another owner ([OwnerMetadataKey]). Within one process this is
// exact. Across processes sharing a directory, an unnamed data file is
// linked into place only if the name is still free (otherwise the owner is
// checked again); the remaining window, between the check and the rename
// that replaces an existing object of the same owner (or that publishes a
// ".tmp-*" file where O_TMPFILE is unavailable), is a few system calls.
//
// The metadata names the bytes it describes by size and sha256, so a
// mismatched sidecar (a crash between the two renames, or two processes
// writing one key) is detected rather than trusted: Stat, which always
// hashes the file, ignores metadata whose sha256 differs from the bytes on
// disk; Open, which does not hash up front, uses metadata whose size
// matches and its reader fails with an *IntegrityError at end of stream if
// the bytes do not match the recorded sha256.
//
// # Keys never leave the root
//
// Every file operation goes through an [os.Root], which by construction
// cannot reach outside the root directory even through symbolic links
// planted concurrently. In addition Disk refuses (ErrInvalidKey) any key
// whose path inside the root crosses an existing symbolic link, so objects
// are always plain files in plain directories.
type Disk struct {
	root  string
	locks [64]sync.Mutex
	// noXattr: the file system refused a user extended attribute, so
	// metadata goes to sidecars from then on.
	noXattr atomic.Bool
	// noUnnamed: data files get a ".tmp-*" name from the start (no
	// O_TMPFILE, or no /proc to name such a file through).
	noUnnamed atomic.Bool
}

var _ Store = (*Disk)(nil)

const (
	tmpPrefix  = ".tmp-"
	metaSuffix = ".meta"
	// metaXattr is the extended attribute holding an object's metadata.
	metaXattr = "user.videoworker.meta"
	// maxMetaBytes bounds the metadata read from an attribute or sidecar.
	maxMetaBytes = 1 << 20
)

// errNoXattr: a file has no metadata attribute (or its file system keeps
// none).
var errNoXattr = errors.New("no metadata attribute")

// NewDisk returns a Disk rooted at root, which is made absolute and created
// (mode 0o755, with parents) if missing. It fails if root exists and is not
// a directory.
func NewDisk(root string) (*Disk, error) {
	if root == "" {
		return nil, errors.New("storage: disk root is empty")
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("storage: disk root %q: %w", root, err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("storage: create disk root: %w", err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("storage: disk root: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("storage: disk root %s is not a directory", abs)
	}
	d := &Disk{root: abs}
	d.noUnnamed.Store(!unnamedFilesWork(abs))
	return d, nil
}

// Root returns the absolute root directory.
func (d *Disk) Root() string { return d.root }

// Location returns "file://" followed by the object's absolute path, or ""
// when key is not valid for Disk.
func (d *Disk) Location(key string) string {
	p, err := d.path(key)
	if err != nil {
		return ""
	}
	return (&url.URL{Scheme: "file", Path: filepath.ToSlash(p)}).String()
}

// path validates key for Disk and returns its absolute path, checked to lie
// strictly below the root.
func (d *Disk) path(key string) (string, error) {
	if err := ValidateKey(key); err != nil {
		return "", err
	}
	for seg := range strings.SplitSeq(key, "/") {
		if strings.HasPrefix(seg, tmpPrefix) {
			return "", invalidKey(key, fmt.Sprintf("segment %q starts with %q, reserved for temporary files", seg, tmpPrefix))
		}
		if strings.HasSuffix(seg, metaSuffix) {
			return "", invalidKey(key, fmt.Sprintf("segment %q ends with %q, reserved for metadata sidecars", seg, metaSuffix))
		}
	}
	p := filepath.Join(d.root, filepath.FromSlash(key))
	rel, err := filepath.Rel(d.root, p)
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) || filepath.IsAbs(rel) {
		return "", invalidKey(key, "key resolves outside the storage root")
	}
	return p, nil
}

// open validates key and opens the root. rel is the key as a path relative
// to the root.
func (d *Disk) open(key string) (root *os.Root, rel string, err error) {
	if _, err := d.path(key); err != nil {
		return nil, "", err
	}
	root, err = os.OpenRoot(d.root)
	if err != nil {
		return nil, "", fmt.Errorf("storage: open disk root: %w", err)
	}
	return root, filepath.FromSlash(key), nil
}

func (d *Disk) lock(key string) *sync.Mutex {
	h := fnv.New32a()
	h.Write([]byte(key))
	return &d.locks[h.Sum32()%uint32(len(d.locks))]
}

// sidecar is the JSON document stored at <key>.meta.
type sidecar struct {
	Version     int               `json:"version"`
	Size        int64             `json:"size"`
	SHA256      string            `json:"sha256"`
	ContentType string            `json:"content_type,omitempty"`
	Metadata    map[string]string `json:"metadata,omitempty"`
}

// Put implements [Store.Put]; see [Disk] for the write protocol. If the final
// directory fsync fails Put returns an error although the object is already
// in place (its durability is unknown); a retried Put replaces it.
func (d *Disk) Put(ctx context.Context, key string, r io.Reader, opts PutOptions) (ObjectInfo, error) {
	root, rel, err := d.open(key)
	if err != nil {
		return ObjectInfo{}, err
	}
	defer root.Close()
	wantSHA, err := normSHA256(opts.SHA256)
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("storage: put %q: %w", key, err)
	}
	if err := ctx.Err(); err != nil {
		return ObjectInfo{}, fmt.Errorf("storage: put %q: %w", key, err)
	}
	dir, base := filepath.Split(rel)
	dir = filepath.Clean(dir)
	syncDirs, err := mkdirs(root, key, dir)
	if err != nil {
		return ObjectInfo{}, err
	}
	// Everything below works in the object's directory, by single names:
	// one path walk instead of one per step.
	dr := root
	if dir != "." {
		if dr, err = root.OpenRoot(dir); err != nil {
			return ObjectInfo{}, fmt.Errorf("storage: put %q: %w", key, err)
		}
		defer dr.Close()
	}

	dirF, err := dr.Open(".")
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("storage: put %q: %w", key, err)
	}
	defer dirF.Close()

	// Temporary files are removed on every path that does not commit them.
	// An unnamed data file (tmp.name == "") needs no removal: closing it
	// frees it.
	tmp := &tempData{dir: dirF}
	var tmpMeta string
	defer func() {
		if tmp.f != nil {
			_ = tmp.f.Close()
		}
		if tmp.name != "" {
			_ = dr.Remove(tmp.name)
		}
		if tmpMeta != "" {
			_ = dr.Remove(tmpMeta)
		}
	}()
	if err := d.createData(dr, tmp); err != nil {
		return ObjectInfo{}, fmt.Errorf("storage: put %q: %w", key, err)
	}
	w, err := d.writeData(ctx, tmp.f, r, opts, wantSHA)
	if err != nil {
		var ie *IntegrityError
		if errors.As(err, &ie) {
			ie.Key = key
			return ObjectInfo{}, ie
		}
		return ObjectInfo{}, fmt.Errorf("storage: put %q: %w", key, err)
	}
	if !w.inXattr {
		if tmpMeta, err = writeSidecar(dr, w.metaJSON); err != nil {
			return ObjectInfo{}, fmt.Errorf("storage: put %q: %w", key, err)
		}
	}
	if err := d.commit(dr, key, base, tmp, tmpMeta, opts); err != nil {
		return ObjectInfo{}, err
	}
	tmpMeta = ""
	err = tmp.f.Close()
	tmp.f = nil
	if err == nil {
		err = dirF.Sync()
	}
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("storage: put %q: object written but not durable: %w", key, err)
	}
	for _, dir := range syncDirs {
		if err := syncDir(root, dir); err != nil {
			return ObjectInfo{}, fmt.Errorf("storage: put %q: object written but not durable: %w", key, err)
		}
	}
	return ObjectInfo{
		Key:         key,
		Size:        w.meta.Size,
		SHA256:      w.meta.SHA256,
		ContentType: w.meta.ContentType,
		Location:    d.Location(key),
		ModTime:     w.modTime,
		Metadata:    cloneMap(w.meta.Metadata),
	}, nil
}

// written is what writeData learnt of the temporary file.
type written struct {
	meta     sidecar // its metadata (Metadata shared with PutOptions)
	metaJSON []byte  // meta as stored
	modTime  time.Time
	// inXattr: the metadata is in the file's extended attribute; otherwise
	// it needs a sidecar.
	inXattr bool
}

// writeData streams r into f (reading at most opts.Size+1 bytes when the
// size is known), checks the size and sha256 (an *IntegrityError without
// its Key), records the metadata in f's extended attribute when the file
// system allows and fsyncs f.
func (d *Disk) writeData(ctx context.Context, f *os.File, r io.Reader, opts PutOptions, wantSHA string) (written, error) {
	var w written
	h := sha256.New()
	var src io.Reader = ctxReader{ctx: ctx, r: r}
	if opts.Size >= 0 {
		src = io.LimitReader(src, opts.Size+1)
	}
	n, err := copyHashed(f, h, src)
	if err != nil {
		return w, err
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if (opts.Size >= 0 && n != opts.Size) || (wantSHA != "" && sum != wantSHA) {
		ie := &IntegrityError{WantSize: opts.Size, GotSize: n, WantSHA256: wantSHA, GotSHA256: sum}
		if ie.WantSize < 0 {
			ie.WantSize = -1
		}
		return w, ie
	}
	w.meta = sidecar{Version: 1, Size: n, SHA256: sum, ContentType: opts.ContentType, Metadata: opts.Metadata}
	if w.metaJSON, err = json.Marshal(w.meta); err != nil {
		return w, err
	}
	if !d.noXattr.Load() {
		switch err := setXattr(f, metaXattr, w.metaJSON); {
		case err == nil:
			w.inXattr = true
		case xattrUnsupported(err):
			d.noXattr.Store(true)
		default:
			// Too large for this file system's attribute space (E2BIG,
			// ENOSPC, ERANGE) or another refusal: this object gets a
			// sidecar.
		}
	}
	if err := f.Sync(); err != nil {
		return w, err
	}
	fi, err := f.Stat()
	if err != nil {
		return w, err
	}
	w.modTime = fi.ModTime()
	return w, nil
}

// tempData is the data file of a Put before it is committed.
type tempData struct {
	dir *os.File // the object's directory
	f   *os.File // open until committed
	// name is the file's temporary name in dir, "" while it has none.
	name string
}

// createData creates the data file: unnamed (O_TMPFILE) where the system
// allows, so that a process killed mid-download leaves nothing behind;
// otherwise a ".tmp-*" file.
func (d *Disk) createData(dr *os.Root, t *tempData) error {
	if !d.noUnnamed.Load() {
		f, err := openUnnamed(t.dir)
		if err == nil {
			t.f = f
			return nil
		}
		if !unnamedUnsupported(err) {
			return err // e.g. out of file descriptors or space
		}
		d.noUnnamed.Store(true) // this file system has no O_TMPFILE
	}
	f, name, err := createTemp(dr, "")
	if err != nil {
		return err
	}
	t.f, t.name = f, name
	return nil
}

// commit moves the object (and its sidecar, if it has one) into place under
// the key's lock. dr is the object's directory and base its name there. An
// unnamed data file is linked straight to base when no object is there
// (one directory change); otherwise it gets a temporary name that is then
// renamed over the old object, which stays whole until that moment.
func (d *Disk) commit(dr *os.Root, key, base string, t *tempData, tmpMeta string, opts PutOptions) error {
	mu := d.lock(key)
	mu.Lock()
	defer mu.Unlock()
	// Refuse to replace a directory, a symbolic link or another owner's
	// object. This is checked before the sidecar moves so that a failed
	// Put leaves no trace.
	exists := false
	if fi, err := dr.Lstat(base); err == nil {
		if fi.Mode()&fs.ModeSymlink != 0 {
			return invalidKey(key, "path is a symbolic link")
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("storage: put %q: path exists and is not a regular file", key)
		}
		exists = true
		if err := checkOwner(dr, key, base, opts); err != nil {
			return err
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("storage: put %q: %w", key, err)
	}
	if tmpMeta != "" {
		// Only a rename may fail once the new sidecar is in place: name
		// the data file first.
		if t.name == "" {
			if err := d.nameTemp(t); err != nil {
				return fmt.Errorf("storage: put %q: install data: %w", key, err)
			}
		}
		if err := dr.Rename(tmpMeta, base+metaSuffix); err != nil {
			return fmt.Errorf("storage: put %q: install metadata: %w", key, err)
		}
	}
	err := d.install(dr, base, t, exists, func() error { return checkOwner(dr, key, base, opts) })
	if err != nil {
		if errors.Is(err, ErrKeyConflict) {
			return err // only without a sidecar: nothing of ours is in place
		}
		// The old object (if any) is still in place; drop the new sidecar
		// that no longer describes it (a stale one would be ignored anyway).
		if tmpMeta != "" {
			_ = dr.Remove(base + metaSuffix)
		}
		return fmt.Errorf("storage: put %q: install data: %w", key, err)
	}
	if tmpMeta == "" {
		// A sidecar left by an earlier version of this object (or an
		// earlier program version) describes other bytes; the attribute
		// takes precedence, but don't leave it to confuse operators.
		// (Lstat first: a Remove of a missing name costs two syscalls.)
		if _, err := dr.Lstat(base + metaSuffix); err == nil {
			_ = dr.Remove(base + metaSuffix)
		}
	}
	return nil
}

// install gives the data file the name base. recheck runs when another
// process put an object at base since commit looked.
func (d *Disk) install(dr *os.Root, base string, t *tempData, exists bool, recheck func() error) error {
	if t.name == "" {
		if !exists {
			err := d.link(t, base)
			if err == nil || !errors.Is(err, fs.ErrExist) {
				return err
			}
			// Another process put the key meanwhile: replace it if it is
			// not another owner's.
			if err := recheck(); err != nil {
				return err
			}
		}
		if err := d.nameTemp(t); err != nil {
			return err
		}
	}
	if err := dr.Rename(t.name, base); err != nil {
		return err
	}
	t.name = ""
	return nil
}

// checkOwner fails with ErrKeyConflict when the object at base (in the
// object's directory dr) has metadata naming an owner other than opts'.
// Metadata that does not describe the file (its size differs) names no
// owner; an unreadable object is left for the rename to report.
func checkOwner(dr *os.Root, key, base string, opts PutOptions) error {
	if opts.Metadata[OwnerMetadataKey] == "" {
		return nil
	}
	f, err := dr.Open(base)
	if err != nil {
		return nil
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return nil
	}
	b, xerr := getXattr(f, metaXattr)
	switch {
	case errors.Is(xerr, errNoXattr):
		b = readSidecar(dr, base+metaSuffix)
	case xerr != nil:
		return fmt.Errorf("storage: put %q: read the existing object's metadata: %w", key, xerr)
	}
	var m sidecar
	if len(b) == 0 || json.Unmarshal(b, &m) != nil || m.Size != fi.Size() {
		return nil
	}
	return ownerConflict(key, opts, m.Metadata)
}

// nameTemp links the unnamed data file to a new ".tmp-*" name.
func (d *Disk) nameTemp(t *tempData) error {
	name, err := withTempName("", func(name string) error { return d.link(t, name) })
	if err != nil {
		return err
	}
	t.name = name
	return nil
}

// link names the unnamed data file. A failure other than a taken name
// (a /proc without our fds, a security policy refusing linkat) turns
// unnamed files off for the next Put, which the task's retry makes.
func (d *Disk) link(t *tempData, name string) error {
	err := linkFile(t.f, t.dir, name)
	if err != nil && !errors.Is(err, fs.ErrExist) {
		d.noUnnamed.Store(true)
	}
	return err
}

// mkdirs creates dir (relative to root) and its parents, refusing any
// existing component that is a symbolic link or not a directory. It returns
// the directories whose entries changed (parents of created directories),
// which must be fsynced for the new directories to be durable.
func mkdirs(root *os.Root, key, dir string) ([]string, error) {
	if dir == "." {
		return nil, nil
	}
	var changed []string
	parent := "."
	for seg := range strings.SplitSeq(dir, string(filepath.Separator)) {
		p := filepath.Join(parent, seg)
		for range 3 { // a concurrent Put may create p between Lstat and Mkdir
			fi, err := root.Lstat(p)
			if err == nil {
				if fi.Mode()&fs.ModeSymlink != 0 {
					return nil, invalidKey(key, fmt.Sprintf("path component %q is a symbolic link", filepath.ToSlash(p)))
				}
				if !fi.IsDir() {
					return nil, fmt.Errorf("storage: put %q: path component %q exists and is not a directory", key, filepath.ToSlash(p))
				}
				break
			}
			if !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("storage: put %q: %w", key, err)
			}
			err = root.Mkdir(p, 0o755)
			if err == nil {
				changed = append(changed, parent)
				break
			}
			if !errors.Is(err, fs.ErrExist) {
				return nil, fmt.Errorf("storage: put %q: %w", key, err)
			}
		}
		parent = p
	}
	return changed, nil
}

// checkPath refuses a key whose path crosses a symbolic link. A missing
// component ends the walk (the caller will then see the object missing).
func checkPath(root *os.Root, key, rel string) error {
	p := ""
	for seg := range strings.SplitSeq(rel, string(filepath.Separator)) {
		p = filepath.Join(p, seg)
		fi, err := root.Lstat(p)
		if err != nil {
			return nil
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return invalidKey(key, fmt.Sprintf("path component %q is a symbolic link", filepath.ToSlash(p)))
		}
	}
	return nil
}

// createTemp creates a new ".tmp-*" file in dr.
func createTemp(dr *os.Root, suffix string) (*os.File, string, error) {
	var f *os.File
	name, err := withTempName(suffix, func(name string) (err error) {
		f, err = dr.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		return err
	})
	return f, name, err
}

// tempName returns a new random ".tmp-*" name ending in suffix.
func tempName(suffix string) string {
	var rnd [12]byte
	_, _ = rand.Read(rnd[:])
	return tmpPrefix + hex.EncodeToString(rnd[:]) + suffix
}

// withTempName calls create with new temporary names until one is not
// taken (create fails with an error wrapping fs.ErrExist), and returns it.
func withTempName(suffix string, create func(name string) error) (string, error) {
	for range 10 {
		name := tempName(suffix)
		err := create(name)
		if err == nil {
			return name, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return "", err
		}
	}
	return "", errors.New("cannot find a free temporary name")
}

// writeSidecar writes data, the metadata document, to a new temporary
// sidecar in dr and fsyncs it.
func writeSidecar(dr *os.Root, data []byte) (string, error) {
	f, name, err := createTemp(dr, metaSuffix)
	if err != nil {
		return "", err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = dr.Remove(name)
		return "", fmt.Errorf("write metadata: %w", err)
	}
	return name, nil
}

// readSidecar returns the sidecar at name, or nil when there is none or it
// is unreadable or implausibly large.
func readSidecar(root *os.Root, name string) []byte {
	f, err := root.Open(name)
	if err != nil {
		return nil
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxMetaBytes+1))
	if err != nil || len(b) > maxMetaBytes {
		return nil
	}
	return b
}

func syncDir(root *os.Root, dir string) error {
	f, err := root.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// openObject opens the data file and reads its sidecar under the key's lock.
// meta is nil when there is no readable sidecar or it does not match the
// file's size.
func (d *Disk) openObject(ctx context.Context, op, key string) (*os.File, fs.FileInfo, *sidecar, error) {
	root, rel, err := d.open(key)
	if err != nil {
		return nil, nil, nil, err
	}
	defer root.Close()
	if err := ctx.Err(); err != nil {
		return nil, nil, nil, fmt.Errorf("storage: %s %q: %w", op, key, err)
	}
	if err := checkPath(root, key, rel); err != nil {
		return nil, nil, nil, err
	}
	mu := d.lock(key)
	mu.Lock()
	f, err := root.Open(rel)
	var metaBytes []byte
	if err == nil {
		// The attribute is part of the file: no pair to keep consistent.
		// A file without one may have a sidecar (a file system without
		// attributes, or an object written by an earlier version).
		var xerr error
		switch metaBytes, xerr = getXattr(f, metaXattr); {
		case errors.Is(xerr, errNoXattr):
			metaBytes = readSidecar(root, rel+metaSuffix)
		case xerr != nil:
			// Not "no attribute": a sidecar, if any, may be stale.
			f.Close()
			err = fmt.Errorf("read metadata: %w", xerr)
		}
	}
	mu.Unlock()
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || isNotDir(err) {
			return nil, nil, nil, fmt.Errorf("%w: %q", ErrNotExist, key)
		}
		return nil, nil, nil, fmt.Errorf("storage: %s %q: %w", op, key, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, nil, fmt.Errorf("storage: %s %q: %w", op, key, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, nil, fmt.Errorf("%w: %q", ErrNotExist, key)
	}
	var meta *sidecar
	if len(metaBytes) > 0 {
		var m sidecar
		if json.Unmarshal(metaBytes, &m) == nil && m.Size == fi.Size() {
			meta = &m
		}
	}
	return f, fi, meta, nil
}

// Stat implements [Store.Stat]. It always computes SHA256 by streaming the
// file (exactness over speed: a multi-GiB video takes seconds), and reports
// ContentType and Metadata only from a sidecar whose size and sha256 match
// the bytes on disk.
func (d *Disk) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	f, fi, meta, err := d.openObject(ctx, "stat", key)
	if err != nil {
		return ObjectInfo{}, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := copyHashed(nil, h, ctxReader{ctx: ctx, r: f}); err != nil {
		return ObjectInfo{}, fmt.Errorf("storage: stat %q: %w", key, err)
	}
	info := d.info(key, fi, nil)
	info.SHA256 = hex.EncodeToString(h.Sum(nil))
	if meta != nil && meta.SHA256 == info.SHA256 {
		info.ContentType = meta.ContentType
		info.Metadata = cloneMap(meta.Metadata)
	}
	return info, nil
}

// Open implements [Store.Open]. ObjectInfo.SHA256, ContentType and Metadata
// come from the sidecar recorded by Put (empty for a file without one). The
// reader honours ctx on every Read, and when the sidecar recorded a sha256
// it verifies the bytes as they stream: at end of file it returns an
// *IntegrityError instead of io.EOF if they do not match.
func (d *Disk) Open(ctx context.Context, key string) (io.ReadCloser, ObjectInfo, error) {
	f, fi, meta, err := d.openObject(ctx, "open", key)
	if err != nil {
		return nil, ObjectInfo{}, err
	}
	info := d.info(key, fi, meta)
	return newVerifyingReader(ctx, f, key, fi.Size(), info.SHA256), info, nil
}

func (d *Disk) info(key string, fi fs.FileInfo, meta *sidecar) ObjectInfo {
	info := ObjectInfo{Key: key, Size: fi.Size(), Location: d.Location(key), ModTime: fi.ModTime()}
	if meta != nil {
		info.SHA256 = meta.SHA256
		info.ContentType = meta.ContentType
		info.Metadata = cloneMap(meta.Metadata)
	}
	return info
}

// Delete implements [Store.Delete]. It removes the data, then the sidecar,
// so an interrupted Delete leaves at worst an orphan sidecar, which is
// ignored and replaced by the next Put. A directory at key is not an object
// and is left alone.
func (d *Disk) Delete(ctx context.Context, key string) error {
	root, rel, err := d.open(key)
	if err != nil {
		return err
	}
	defer root.Close()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("storage: delete %q: %w", key, err)
	}
	if err := checkPath(root, key, rel); err != nil {
		return err
	}
	mu := d.lock(key)
	mu.Lock()
	err = func() error {
		fi, err := root.Lstat(rel)
		if err == nil && fi.Mode().IsRegular() {
			if err := root.Remove(rel); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		} else if err != nil && !errors.Is(err, fs.ErrNotExist) && !isNotDir(err) {
			return err
		}
		if err := root.Remove(rel + metaSuffix); err != nil && !errors.Is(err, fs.ErrNotExist) && !isNotDir(err) {
			return err
		}
		return nil
	}()
	mu.Unlock()
	if err != nil {
		return fmt.Errorf("storage: delete %q: %w", key, err)
	}
	if err := syncDir(root, filepath.Dir(rel)); err != nil && !errors.Is(err, fs.ErrNotExist) && !isNotDir(err) {
		return fmt.Errorf("storage: delete %q: %w", key, err)
	}
	return nil
}

// ctxReader fails every Read once ctx is done, so a long copy stops within
// one buffer of a cancellation.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, readError{err}
	}
	n, err := c.r.Read(p)
	if err != nil && err != io.EOF {
		err = readError{err}
	}
	return n, err
}

// readError marks an error from the source side of a copy.
type readError struct{ err error }

func (e readError) Error() string { return e.err.Error() }
func (e readError) Unwrap() error { return e.err }

func normSHA256(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	s = strings.ToLower(s)
	if b, err := hex.DecodeString(s); err != nil || len(b) != sha256.Size {
		return "", fmt.Errorf("PutOptions.SHA256 %q is not 64 hex digits", s)
	}
	return s, nil
}

func cloneMap(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// isNotDir reports an ENOTDIR-like error: a path component is a file, so the
// object cannot exist.
func isNotDir(err error) bool { return errors.Is(err, syscall.ENOTDIR) }
