package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/minio/minio-go/v7"
)

// s3Server is an S3-compatible server (gofakes3, in memory) on 127.0.0.1
// with one bucket; it returns the artifacts URL of the bucket.
func s3Server(t testing.TB, bucket string) string {
	t.Helper()
	backend := s3mem.New()
	if err := backend.CreateBucket(bucket); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(gofakes3.New(backend).Server())
	t.Cleanup(hs.Close)
	return "s3+http://conferral:secret@" + strings.TrimPrefix(hs.URL, "http://") + "/" + bucket + "/fleet"
}

// TestObjectStoreArtifacts writes artifacts through one process's cache
// and reads them through another's: PUT once complete, GET and checked
// against their names, a corrupt object refused and never cached.
func TestObjectStoreArtifacts(t *testing.T) {
	ctx := context.Background()
	url := s3Server(t, "artifacts")
	open := func() *artifacts {
		a, err := newSharedArtifacts(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		if a.remote, err = newObjectStore(ctx, url); err != nil {
			t.Fatal(err)
		}
		return a
	}
	writer, reader := open(), open()
	body := []byte("an ONNX file, say")
	sum, path, size, err := writer.write(bytes.NewReader(body), 1<<20, ".onnx")
	if err != nil || size != int64(len(body)) {
		t.Fatalf("write: %v (%d bytes)", err, size)
	}
	tmp, err := writer.temp(".safetensors")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(tmp, []byte("weights"), 0o644)
	wsum, wpath, err := writer.adopt(tmp, ".safetensors")
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct{ sum, stored string }{{sum, path}, {wsum, wpath}} {
		got, err := reader.verify(tc.stored)
		if err != nil {
			t.Fatalf("reading %s through another cache: %v", tc.sum, err)
		}
		if filepath.Dir(got) != reader.dir {
			t.Errorf("read %s at %s, want it in the reader's cache %s", tc.sum, got, reader.dir)
		}
		b, _ := os.ReadFile(got)
		h := sha256.Sum256(b)
		if hex.EncodeToString(h[:]) != tc.sum {
			t.Errorf("the fetched %s holds other bytes", tc.sum)
		}
	}

	// An object whose bytes are not its name.
	want := sha256.Sum256([]byte("the real weights"))
	bad := hex.EncodeToString(want[:]) + ".safetensors"
	if _, err := writer.remote.client.PutObject(ctx, "artifacts", writer.remote.key(bad), bytes.NewReader([]byte("tampered")), 8, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	missing := sha256.Sum256([]byte("never stored"))
	for _, tc := range []struct{ name, stored, says string }{
		{"corrupt", filepath.Join("/elsewhere", bad), "is corrupt"},
		{"missing", filepath.Join("/elsewhere", hex.EncodeToString(missing[:])+".onnx"), "not in"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := reader.verify(tc.stored); err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("verify: %v, want an error saying %q", err, tc.says)
			}
			ents, _ := os.ReadDir(reader.dir)
			for _, e := range ents {
				if e.Name() == filepath.Base(tc.stored) || strings.HasPrefix(e.Name(), ".tmp-") {
					t.Errorf("the cache kept %s", e.Name())
				}
			}
		})
	}
}

// TestObjectStoreURLs checks the artifact store URLs that are refused.
func TestObjectStoreURLs(t *testing.T) {
	url := s3Server(t, "artifacts")
	host, _, _ := strings.Cut(strings.Split(url, "@")[1], "/")
	for _, tc := range []struct{ name, url, says string }{
		{"no bucket", "s3+http://" + host, "want s3://host[:port]/bucket"},
		{"no host", "s3:///bucket", "want s3://host[:port]/bucket"},
		{"unknown bucket", "s3+http://" + host + "/nope", `no bucket "nope"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := newObjectStore(context.Background(), tc.url); err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("newObjectStore(%s): %v, want an error saying %q", tc.url, err, tc.says)
			}
		})
	}
}
