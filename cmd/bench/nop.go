package main

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/videoworker/videoworker/apiclient"
	"github.com/videoworker/videoworker/storage"
	"github.com/videoworker/videoworker/worker"
)

// nopAPI and nopStore only let the ceiling build a worker to read its asynq
// server configuration; they are never called.
type nopAPI struct{}

var errNop = errors.New("bench: not used")

func (nopAPI) Create(context.Context, apiclient.CreateRequest, apiclient.CreateOptions) (*apiclient.Video, error) {
	return nil, errNop
}
func (nopAPI) Get(context.Context, string) (*apiclient.Video, error) { return nil, errNop }
func (nopAPI) List(context.Context, apiclient.ListParams) (*apiclient.VideoList, error) {
	return nil, errNop
}
func (nopAPI) Content(context.Context, string, int) (*apiclient.Content, error) { return nil, errNop }
func (nopAPI) Cancel(context.Context, string) (*apiclient.Video, error)         { return nil, errNop }
func (nopAPI) Timeout() time.Duration                                           { return time.Second }

type nopStore struct{}

func (nopStore) Put(context.Context, string, io.Reader, storage.PutOptions) (storage.ObjectInfo, error) {
	return storage.ObjectInfo{}, errNop
}
func (nopStore) Stat(context.Context, string) (storage.ObjectInfo, error) {
	return storage.ObjectInfo{}, errNop
}
func (nopStore) Open(context.Context, string) (io.ReadCloser, storage.ObjectInfo, error) {
	return nil, storage.ObjectInfo{}, errNop
}
func (nopStore) Delete(context.Context, string) error { return errNop }
func (nopStore) Location(string) string               { return "" }

var (
	_ worker.VideoAPI = nopAPI{}
	_ storage.Store   = nopStore{}
)
