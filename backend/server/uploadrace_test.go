package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"slices"
	"sync"
	"testing"

	"github.com/conferral/conferral/shared"
)

// docString is an ONNX ModelProto doc_string field (6, bytes): appended to
// a model file it makes other bytes of the same model.
func docString(s string) []byte {
	return append([]byte{6<<3 | 2, byte(len(s))}, s...)
}

// TestUploadRace uploads the same bytes several times at once, one upload
// to be accepted and the others refused (some before the model is read,
// some after): the accepted upload's job must find its file, in every
// round. A refused upload used to remove the file that an accepted one
// was still validating.
func TestUploadRace(t *testing.T) {
	f, dir := copyFixture(t)
	ts := start(t, Config{Dir: dir, MaxHeavy: 8}) // all five at once
	good, err := os.ReadFile("testdata/mlp_28x28.onnx")
	if err != nil {
		t.Fatal(err)
	}
	post := func(file []byte, fields map[string]string) (int, shared.Job, string) {
		var body bytes.Buffer
		mw := multipart.NewWriter(&body)
		for k, v := range fields {
			mw.WriteField(k, v)
		}
		w, _ := mw.CreateFormFile("file", "model.onnx")
		w.Write(file)
		mw.Close()
		resp, err := http.Post(ts.http.URL+"/api/verify", mw.FormDataContentType(), &body)
		if err != nil {
			return 0, shared.Job{}, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var j shared.Job
		json.Unmarshal(b, &j)
		return resp.StatusCode, j, string(b)
	}
	refusals := []map[string]string{
		{"fingerprint": f.fp.ID, "layout": "diagonal"}, // refused before the model is read
		{"fingerprint": f.fp.ID, "layout": "nhwc"},     // refused after: the images do not fit
		{"fingerprint": f.fp.ID, "layout": "diagonal"},
		{"fingerprint": f.fp.ID, "layout": "nhwc"},
	}
	ctx := context.Background()
	for round := range 6 {
		file := append(slices.Clip(good), docString(fmt.Sprintf("race round %d", round))...)
		var wg sync.WaitGroup
		codes := make([]int, len(refusals))
		for i, fields := range refusals {
			wg.Add(1)
			go func() {
				defer wg.Done()
				codes[i], _, _ = post(file, fields)
			}()
		}
		code, j, body := post(file, map[string]string{"fingerprint": f.fp.ID})
		wg.Wait()
		if code != http.StatusAccepted {
			t.Errorf("round %d: the acceptable upload: %d %s", round, code, body)
			continue
		}
		for i, c := range codes {
			if c != http.StatusBadRequest {
				t.Errorf("round %d: refused upload %d: %d, want 400", round, i, c)
			}
		}
		path, err := ts.store.Upload(ctx, j.Args.Verify.Upload)
		if err != nil {
			t.Errorf("round %d: the accepted upload's record: %v", round, err)
			continue
		}
		if _, err := os.Stat(path); err != nil {
			t.Errorf("round %d: the accepted upload's file: %v", round, err)
		}
	}
}
