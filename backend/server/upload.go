package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/conferral/conferral/backend/onnx"
	"github.com/conferral/conferral/backend/suspect"
	"github.com/conferral/conferral/shared"
)

// maxField bounds a form field of an upload.
const maxField = 4 << 10

// verify is POST /api/verify: JSON VerifyArgs, or a multipart ONNX upload.
func (s *Server) verify(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/form-data") {
		j, err := s.verifyUpload(w, r)
		s.replyStatus(w, http.StatusAccepted, j, err)
		return
	}
	var a shared.VerifyArgs
	if err := readJSON(w, r, &a); err != nil {
		s.fail(w, err)
		return
	}
	j, err := s.Submit(r.Context(), shared.JobRequest{Kind: shared.JobVerify, Verify: &a})
	s.replyStatus(w, http.StatusAccepted, j, err)
}

// verifyUpload streams the part "file" into an artifact (refusing it past
// Config.MaxUpload), reads the form fields, checks that the model loads and
// fits the fingerprint, and queues its verification.
func (s *Server) verifyUpload(w http.ResponseWriter, r *http.Request) (shared.Job, error) {
	var none shared.Job
	r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxUpload+1<<20)
	mr, err := r.MultipartReader()
	if err != nil {
		return none, badInput("reading the upload: %v", err)
	}
	fields := map[string]string{}
	var sum, path string
	var size int64
	kept := false
	var unlock func() // the digest's lock (writeUpload)
	defer func() {
		// A refused file goes, unless the same bytes were accepted before.
		if sum != "" && !kept {
			if _, err := s.store.Upload(context.WithoutCancel(r.Context()), sum); errors.Is(err, ErrNotFound) {
				os.Remove(path)
			}
		}
		if unlock != nil {
			unlock()
		}
	}()
	tooLarge := func(err error) error {
		var mbe *http.MaxBytesError
		if errors.Is(err, errTooLarge) || errors.As(err, &mbe) {
			return fmt.Errorf("the uploaded model is larger than the server's limit of %d bytes: %w", s.cfg.MaxUpload, errTooLarge)
		}
		return nil
	}
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			if e := tooLarge(err); e != nil {
				return none, e
			}
			return none, badInput("reading the upload: %v", err)
		}
		name := part.FormName()
		if name == "file" {
			if sum != "" {
				return none, badInput("the upload holds more than one file")
			}
			sum, path, size, unlock, err = s.writeUpload(part)
			if err != nil {
				if e := tooLarge(err); e != nil {
					return none, e
				}
				return none, badInput("reading the uploaded model: %v", err)
			}
			continue
		}
		b, err := io.ReadAll(io.LimitReader(part, maxField+1))
		if err != nil {
			if e := tooLarge(err); e != nil {
				return none, e
			}
			return none, badInput("reading field %q: %v", name, err)
		}
		if len(b) > maxField {
			return none, badInput("field %q is longer than %d bytes", name, maxField)
		}
		fields[name] = string(b)
	}
	if sum == "" {
		return none, badInput(`the upload has no part "file" with the ONNX model`)
	}
	a := shared.VerifyArgs{Fingerprint: fields["fingerprint"], Upload: sum, Name: fields["name"]}
	in := shared.UploadFields{Layout: fields["layout"]}
	if v := strings.TrimSpace(fields["sequential"]); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return none, badInput("field sequential: %q is not true or false", v)
		}
		a.Sequential = b
	}
	for key, dst := range map[string]*float64{"theta": &a.Theta, "fpr": &a.FPR, "scale": &in.Scale} {
		if v := strings.TrimSpace(fields[key]); v != "" {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return none, badInput("field %s: %q is not a number", key, v)
			}
			*dst = f
		}
	}
	for key, dst := range map[string]*[]float64{"mean": &in.Mean, "std": &in.Std} {
		if v := strings.TrimSpace(fields[key]); v != "" {
			fs, err := onnx.ParseFloats(v)
			if err != nil {
				return none, badInput("field %s: %v", key, err)
			}
			for _, f := range fs {
				*dst = append(*dst, float64(f))
			}
		}
	}
	a.Input = &in
	if a.Name == "" {
		a.Name = "upload " + sum[:12]
	}
	// Check what a request can be checked for before touching the model.
	if err := s.checkVerifyBase(r.Context(), &a); err != nil {
		return none, err
	}
	if err := s.validateUpload(r.Context(), path, size, in, a.Fingerprint); err != nil {
		return none, badInput("the uploaded model is not usable: %v", err)
	}
	if err := s.store.PutUpload(r.Context(), sum, path, size); err != nil {
		return none, err
	}
	kept = true
	return s.Submit(r.Context(), shared.JobRequest{Kind: shared.JobVerify, Verify: &a})
}

func onnxOptions(in shared.UploadFields, maxBytes, maxMemory int64) onnx.Options {
	o := onnx.Options{Layout: strings.ToLower(in.Layout), Scale: float32(in.Scale), MaxBytes: maxBytes, MaxMemory: maxMemory}
	for _, v := range in.Mean {
		o.Mean = append(o.Mean, float32(v))
	}
	for _, v := range in.Std {
		o.Std = append(o.Std, float32(v))
	}
	return o
}

// validateUpload reads the ONNX file (the importer checks the graph and
// runs it once) and checks that it takes the fingerprint's images and
// answers with its classes.
func (s *Server) validateUpload(ctx context.Context, path string, size int64, in shared.UploadFields, fpID string) error {
	_, fp, err := s.openFingerprint(ctx, fpID)
	if err != nil {
		return err
	}
	runtime.LockOSThread() // libtorch's thread pool belongs to the OS thread
	defer runtime.UnlockOSThread()
	m, err := onnx.Open(path, onnxOptions(in, s.cfg.MaxUpload, s.cfg.ONNXMemory))
	if err != nil {
		return err
	}
	defer m.Free()
	c, h, wd := m.InputShape()
	if (c > 0 && c != fp.C) || (h > 0 && h != fp.H) || (wd > 0 && wd != fp.W) {
		return fmt.Errorf("it takes %dx%dx%d images, the fingerprint's are %dx%dx%d", c, h, wd, fp.C, fp.H, fp.W)
	}
	if k := m.Classes(); k > 0 && len(fp.Meta.Classes) > 0 && k != len(fp.Meta.Classes) {
		return fmt.Errorf("it has %d classes, the fingerprint's source has %d", k, len(fp.Meta.Classes))
	}
	// One real query: shapes left open in the file are checked too.
	_, err = (&suspect.Local{Model: m, Name: "upload"}).Classify(ctx, suspect.Images{X: fp.ImageFloat32(0), N: 1, C: fp.C, H: fp.H, W: fp.W})
	return err
}

// openUpload loads an uploaded ONNX model as a local suspect.
func (s *Server) openUpload(ctx context.Context, a shared.VerifyArgs, in shared.UploadFields) (suspect.Suspect, func(), error) {
	path, err := s.store.Upload(ctx, a.Upload)
	if err != nil {
		return nil, nil, err
	}
	m, err := onnx.Open(path, onnxOptions(in, s.cfg.MaxUpload, s.cfg.ONNXMemory))
	if err != nil {
		return nil, nil, fmt.Errorf("loading the uploaded model: %w", err)
	}
	if s.device != m.Device() {
		if err := m.To(s.device); err != nil {
			m.Free()
			return nil, nil, err
		}
	}
	return &suspect.Local{Model: m, Name: cmp.Or(a.Name, "upload "+a.Upload[:min(12, len(a.Upload))])}, m.Free, nil
}
