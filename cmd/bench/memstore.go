package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/videoworker/videoworker/storage"
)

// memStore is a storage.Store that keeps only each object's size and
// sha256: the pipeline's "what if storing cost nothing" comparison
// (-pipeline-store mem). It reads and hashes every byte, as the real
// stores do, and checks size and sha256 the same way.
type memStore struct {
	mu   sync.Mutex
	objs map[string]storage.ObjectInfo
}

var _ storage.Store = (*memStore)(nil)

func newMemStore() *memStore { return &memStore{objs: map[string]storage.ObjectInfo{}} }

func (s *memStore) Put(ctx context.Context, key string, r io.Reader, opts storage.PutOptions) (storage.ObjectInfo, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		return storage.ObjectInfo{}, err
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if (opts.Size >= 0 && n != opts.Size) || (opts.SHA256 != "" && !strings.EqualFold(sum, opts.SHA256)) {
		return storage.ObjectInfo{}, &storage.IntegrityError{Key: key, WantSize: opts.Size, GotSize: n, WantSHA256: opts.SHA256, GotSHA256: sum}
	}
	info := storage.ObjectInfo{Key: key, Size: n, SHA256: sum, ContentType: opts.ContentType, Location: s.Location(key), ModTime: time.Now()}
	s.mu.Lock()
	s.objs[key] = info
	s.mu.Unlock()
	return info, nil
}

func (s *memStore) Stat(_ context.Context, key string) (storage.ObjectInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	info, ok := s.objs[key]
	if !ok {
		return storage.ObjectInfo{}, fmt.Errorf("%s: %w", key, storage.ErrNotExist)
	}
	return info, nil
}

func (s *memStore) Open(context.Context, string) (io.ReadCloser, storage.ObjectInfo, error) {
	return nil, storage.ObjectInfo{}, errNop
}

func (s *memStore) Delete(_ context.Context, key string) error {
	s.mu.Lock()
	delete(s.objs, key)
	s.mu.Unlock()
	return nil
}

func (s *memStore) Location(key string) string { return "mem:///" + key }
