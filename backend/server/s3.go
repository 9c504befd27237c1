package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// An S3-compatible object store as a fleet's shared artifacts. Each
// process keeps a local folder as a cache: an artifact is written there as
// before (a temporary renamed to its sha256), then PUT under the same name;
// a PUT is atomic, so no reader ever sees half an object. A process that
// lacks an artifact GETs it into a temporary, checks its sha256 against its
// name, and renames it into the cache.

// objectTimeout bounds one PUT or GET of an artifact.
const objectTimeout = 30 * time.Minute

// IsObjectStore says whether an --artifacts value names an S3-compatible
// object store: s3://host[:port]/bucket[/prefix] (HTTPS) or
// s3+http://host[:port]/bucket[/prefix]. Credentials come from the URL's
// user and password, else from AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY; ?region= sets the region.
func IsObjectStore(artifacts string) bool {
	return strings.HasPrefix(artifacts, "s3://") || strings.HasPrefix(artifacts, "s3+http://")
}

// objectStore is a bucket and a key prefix.
type objectStore struct {
	client *minio.Client
	bucket string
	prefix string
	where  string // the URL without credentials, for messages
}

// newObjectStore connects to the store and checks that its bucket exists.
func newObjectStore(ctx context.Context, raw string) (*objectStore, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("artifact store: %w", err)
	}
	bucket, prefix, _ := strings.Cut(strings.TrimPrefix(u.Path, "/"), "/")
	if u.Host == "" || bucket == "" {
		return nil, fmt.Errorf("artifact store %q: want s3://host[:port]/bucket[/prefix]", u.Redacted())
	}
	id, secret := os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY")
	if u.User != nil {
		id = u.User.Username()
		secret, _ = u.User.Password()
	}
	opts := &minio.Options{Secure: u.Scheme == "s3", Region: u.Query().Get("region"), BucketLookup: minio.BucketLookupPath}
	if id != "" {
		opts.Creds = credentials.NewStaticV4(id, secret, "")
	} else {
		opts.Creds = credentials.NewStatic("", "", "", credentials.SignatureAnonymous)
	}
	c, err := minio.New(u.Host, opts)
	if err != nil {
		return nil, fmt.Errorf("artifact store %s: %w", u.Redacted(), err)
	}
	u.User, u.RawQuery = nil, ""
	o := &objectStore{client: c, bucket: bucket, prefix: strings.Trim(prefix, "/"), where: u.String()}
	ok, err := c.BucketExists(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("artifact store %s: %w", o.where, err)
	}
	if !ok {
		return nil, fmt.Errorf("artifact store %s: no bucket %q", o.where, bucket)
	}
	return o, nil
}

func (o *objectStore) key(name string) string { return path.Join(o.prefix, name) }

// put uploads a finished artifact unless the store has it already (the
// same name is the same bytes).
func (o *objectStore) put(ctx context.Context, name, file string) error {
	ctx, cancel := context.WithTimeout(ctx, objectTimeout)
	defer cancel()
	if _, err := o.client.StatObject(ctx, o.bucket, o.key(name), minio.StatObjectOptions{}); err == nil {
		return nil
	}
	if _, err := o.client.FPutObject(ctx, o.bucket, o.key(name), file, minio.PutObjectOptions{ContentType: "application/octet-stream"}); err != nil {
		return fmt.Errorf("storing artifact %s in %s: %w", name, o.where, err)
	}
	return nil
}

// fetch downloads an artifact into dir, checking its sha256 against its
// name before it appears there.
func (o *objectStore) fetch(ctx context.Context, name, dir string) error {
	ctx, cancel := context.WithTimeout(ctx, objectTimeout)
	defer cancel()
	sum, _, _ := strings.Cut(name, ".")
	obj, err := o.client.GetObject(ctx, o.bucket, o.key(name), minio.GetObjectOptions{})
	if err != nil {
		return fmt.Errorf("artifact %s: fetching from %s: %w", sum, o.where, err)
	}
	defer obj.Close()
	f, err := os.CreateTemp(dir, ".tmp-*"+filepath.Ext(name))
	if err != nil {
		return fmt.Errorf("artifact %s: %w", sum, err)
	}
	tmp := f.Name()
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(f, h), obj)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		var resp minio.ErrorResponse
		if errors.As(err, &resp) && resp.Code == "NoSuchKey" {
			return fmt.Errorf("artifact %s: not in %s: %w", sum, o.where, os.ErrNotExist)
		}
		return fmt.Errorf("artifact %s: fetching from %s: %w", sum, o.where, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sum {
		os.Remove(tmp)
		return fmt.Errorf("artifact %s is corrupt in %s: its content hashes to %s", sum, o.where, got)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("artifact %s: %w", sum, err)
	}
	return nil
}

// publish uploads an artifact that was just renamed into the folder, when
// the folder is the cache of an object store.
func (a *artifacts) publish(file string) error {
	if a.remote == nil {
		return nil
	}
	return a.remote.put(context.Background(), filepath.Base(file), file)
}
