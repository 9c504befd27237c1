package server

import (
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/conferral/conferral/shared"
)

// TestHeavyLimit holds the one slot for heavy requests with an upload
// that is still arriving: another upload is answered 503 with Retry-After
// at once, a JSON verification is not heavy and goes through, and once the
// slot is free an upload is taken again.
func TestHeavyLimit(t *testing.T) {
	f, dir := copyFixture(t)
	ts := start(t, Config{Dir: dir, MaxHeavy: 1})
	good, err := os.ReadFile("testdata/mlp_28x28.onnx")
	if err != nil {
		t.Fatal(err)
	}
	// A slow upload: the form's start now, the rest when told.
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	slow := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("POST", ts.http.URL+"/api/verify", pr)
		req.Header.Set("Content-Type", mw.FormDataContentType())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			slow <- 0
			return
		}
		resp.Body.Close()
		slow <- resp.StatusCode
	}()
	mw.WriteField("fingerprint", f.fp.ID)
	fw, _ := mw.CreateFormFile("file", "model.onnx")
	fw.Write(good[:len(good)/2])
	for deadline := time.Now().Add(10 * time.Second); len(ts.heavy) == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the slow upload never took the slot")
		}
	}

	code, _, e := ts.upload(good, map[string]string{"fingerprint": f.fp.ID})
	if code != http.StatusServiceUnavailable || !strings.Contains(e.Error, "busy") {
		t.Errorf("second upload while the first runs: %d %q, want 503 busy", code, e.Error)
	}
	resp, err := http.Post(ts.http.URL+"/api/verify", "application/json", strings.NewReader(`{"fingerprint":"`+f.fp.ID+`","model":"`+f.surrogate.ID+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Errorf("JSON verification while the upload runs: %d, want 202", resp.StatusCode)
	}
	req, _ := http.NewRequest("GET", ts.http.URL+"/api/fingerprints/"+f.fp.ID, nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("fingerprint detail while the upload runs: %d, Retry-After %q; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}

	fw.Write(good[len(good)/2:])
	mw.Close()
	pw.Close()
	if c := <-slow; c != http.StatusAccepted {
		t.Errorf("the slow upload: %d, want 202", c)
	}
	if code, _, e := ts.upload(good, map[string]string{"fingerprint": f.fp.ID, "name": "again"}); code != http.StatusAccepted {
		t.Errorf("upload after the slot is free: %d %q", code, e.Error)
	}
	var d shared.FingerprintDetail
	if code := ts.call("GET", "/api/fingerprints/"+f.fp.ID, nil, &d); code != http.StatusOK {
		t.Errorf("fingerprint detail after: %d", code)
	}
}
