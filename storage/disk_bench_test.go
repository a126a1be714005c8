package storage_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"

	"github.com/videoworker/videoworker/storage"
)

// BenchmarkDiskPut stores small videos (the pipeline's 64 KiB) from
// parallel goroutines, as a worker's downloads do: with the fsyncs, the
// metadata and the rename, per object.
func BenchmarkDiskPut(b *testing.B) {
	b.Run("unnamed", func(b *testing.B) { benchmarkDiskPut(b, false) })
	b.Run("named", func(b *testing.B) { benchmarkDiskPut(b, true) })
}

func benchmarkDiskPut(b *testing.B, named bool) {
	d, err := storage.NewDisk(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	if named {
		storage.UseNamedTemps(d)
	}
	data := make([]byte, 64<<10)
	rand.NewChaCha8([32]byte{1}).Read(data)
	sum := sha256.Sum256(data)
	opts := storage.PutOptions{Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:]), ContentType: "video/mp4",
		Metadata: map[string]string{"job_id": "job-1", "video_id": "vid_1"}}
	var n atomic.Int64
	b.SetBytes(int64(len(data)))
	b.SetParallelism(8) // 8 × GOMAXPROCS goroutines, like a worker's download slots
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			key := fmt.Sprintf("videos/2026-11-27/job-%07d.mp4", n.Add(1))
			if _, err := d.Put(context.Background(), key, bytes.NewReader(data), opts); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkDiskPutLarge stores one 256 MiB video at a time: the streaming
// path (read, hash, write) where throughput matters.
func BenchmarkDiskPutLarge(b *testing.B) {
	d, err := storage.NewDisk(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	const size = 256 << 20
	b.SetBytes(size)
	for i := 0; b.Loop(); i++ {
		src := newGen(size)
		key := fmt.Sprintf("big-%d.mp4", i)
		if _, err := d.Put(context.Background(), key, src, storage.PutOptions{Size: size}); err != nil {
			b.Fatal(err)
		}
		if err := d.Delete(context.Background(), key); err != nil {
			b.Fatal(err)
		}
	}
}
