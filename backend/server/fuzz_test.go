package server

import (
	"bytes"
	"context"
	"encoding/json"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"testing"
)

// fuzzServer is a server of its own for a fuzz target (closed when the
// target ends).
func fuzzServer(f *testing.F) *Server {
	s, err := New(context.Background(), Config{Dir: f.TempDir(), Device: "cpu", MaxUpload: 1 << 16})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close(context.Background()) })
	return s
}

// answered checks that an answer is one a client can act on: JSON, and
// a status that says what to do, never a 500.
func answered(t *testing.T, w *httptest.ResponseRecorder, what string) {
	t.Helper()
	switch w.Code {
	case http.StatusAccepted, http.StatusBadRequest, http.StatusNotFound, http.StatusRequestEntityTooLarge, http.StatusServiceUnavailable:
	default:
		t.Fatalf("%s: status %d: %s", what, w.Code, w.Body)
	}
	if !json.Valid(w.Body.Bytes()) {
		t.Fatalf("%s: the answer is not JSON: %s", what, w.Body)
	}
}

// FuzzJobRequest sends arbitrary JSON bodies to the routes that take one.
func FuzzJobRequest(f *testing.F) {
	f.Add("/api/jobs", `{"kind":"train","train":{"arch":"nope"}}`)
	f.Add("/api/jobs", `{"kind":"derive","derive":{"source":"x","attack":"prune","bits":1000}}`)
	f.Add("/api/jobs", `{"kind":"experiment","experiment":{"study":"conferrability","eps_sweep":[-1]}}`)
	f.Add("/api/jobs", `{"kind":"extract","extract":{"source":"a","surrogates":["b"],"references":["c"],"eps":2}}`)
	f.Add("/api/jobs", `{"kind":"train","train":{}}{"kind":"train"}`)
	f.Add("/api/verify", `{"fingerprint":"x","endpoint":"http://192.0.2.1/v2/models/m"}`)
	f.Add("/api/verify", `{"fingerprint":"x","model":"y","theta":7}`)
	f.Add("/api/verify", `[1,2,3]`)
	s := fuzzServer(f)
	h := s.Handler()
	f.Fuzz(func(t *testing.T, path, body string) {
		if path != "/api/jobs" && path != "/api/verify" {
			return
		}
		r := httptest.NewRequest(http.MethodPost, path, bytes.NewReader([]byte(body)))
		r.Host = "127.0.0.1:8080"
		r.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		answered(t, w, path)
	})
}

// FuzzUploadForm sends arbitrary multipart forms (fields and a file) to
// POST /api/verify.
func FuzzUploadForm(f *testing.F) {
	f.Add("fingerprint", "abc", []byte("not an onnx model"), false)
	f.Add("theta", "high", []byte{8, 7, 18, 0}, true)
	f.Add("mean", "0.5,zebra", []byte{}, false)
	f.Add("layout", "diagonal", []byte("x"), true)
	s := fuzzServer(f)
	h := s.Handler()
	f.Fuzz(func(t *testing.T, field, value string, file []byte, mangle bool) {
		var body bytes.Buffer
		mw := multipart.NewWriter(&body)
		mw.WriteField(field, value)
		if fw, err := mw.CreateFormFile("file", "m.onnx"); err == nil {
			fw.Write(file)
		}
		mw.Close()
		b := body.Bytes()
		if mangle && len(b) > 10 { // a form cut short
			b = b[:len(b)-10]
		}
		r := httptest.NewRequest(http.MethodPost, "/api/verify", bytes.NewReader(b))
		r.Host = "127.0.0.1:8080"
		r.Header.Set("Content-Type", mw.FormDataContentType())
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		answered(t, w, "upload")
	})
}
