package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/conferral/conferral/backend/fingerprint"
	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/predict"
	"github.com/conferral/conferral/backend/suspect"
	"github.com/conferral/conferral/shared"
)

// checkStored asserts that everything the fixture stored is still served.
func (ts *testServer) checkStored(f fixture) {
	ts.t.Helper()
	var models []shared.ModelInfo
	ts.call("GET", "/api/models", nil, &models)
	for _, want := range []shared.ModelInfo{f.source, f.surrogate, f.reference} {
		if !slices.ContainsFunc(models, func(m shared.ModelInfo) bool { return m.ID == want.ID && m.Name == want.Name }) {
			ts.t.Errorf("model %s (%s) is no longer listed", want.Name, want.ID)
		}
	}
	var d shared.FingerprintDetail
	if code := ts.call("GET", "/api/fingerprints/"+f.fp.ID, nil, &d); code != http.StatusOK || len(d.Items) != f.fp.Count {
		ts.t.Errorf("fingerprint %s: %d with %d items, want 200 with %d", f.fp.ID, code, len(d.Items), f.fp.Count)
	}
	var j shared.Job
	if ts.call("GET", "/api/jobs/"+f.extractJob, nil, &j); j.State != shared.JobCompleted || j.Result == nil || j.Result.Fingerprint == nil {
		ts.t.Errorf("extract job %s: %s, result %+v", f.extractJob, j.State, j.Result)
	}
}

func TestPipeline(t *testing.T) {
	f, dir := copyFixture(t)
	ts := start(t, Config{Dir: dir})

	var models []shared.ModelInfo
	if code := ts.call("GET", "/api/models", nil, &models); code != http.StatusOK || len(models) != 3 {
		t.Fatalf("GET /api/models: %d, %d models", code, len(models))
	}
	for _, m := range models {
		if m.TestAcc < 0.3 || m.Arch != "mlp" || m.Dataset != "fashion-mnist" || len(m.ID) != 64 || m.ID != m.SHA256 {
			t.Errorf("model %+v: want a trained fashion-mnist mlp named by its sha256", m)
		}
	}
	if f.source.Role != shared.RoleSource || f.surrogate.Role != shared.RoleSurrogate || f.surrogate.Parent != f.source.ID || f.surrogate.Derivation != "retraining" {
		t.Errorf("roles: source %+v, surrogate %+v", f.source, f.surrogate)
	}
	for _, m := range models {
		if _, err := os.Stat(filepath.Join(dir, "artifacts", m.ID+".safetensors")); err != nil {
			t.Errorf("model %s: artifact: %v", m.Name, err)
		}
	}

	var fps []shared.FingerprintInfo
	ts.call("GET", "/api/fingerprints", nil, &fps)
	if len(fps) != 1 || fps[0].ID != f.fp.ID || fps[0].Count < 1 || fps[0].Source != f.source.ID || fps[0].Eps != 0.25 {
		t.Fatalf("fingerprints: %+v", fps)
	}
	var d shared.FingerprintDetail
	ts.call("GET", "/api/fingerprints/"+f.fp.ID, nil, &d)
	if len(d.Items) != f.fp.Count || len(d.Classes) != 10 || len(d.Models) != 2 {
		t.Fatalf("detail: %d items, %d classes, %d models", len(d.Items), len(d.Classes), len(d.Models))
	}
	if d.Models[0].ID != f.surrogate.ID || d.Models[0].Role != shared.RoleSurrogate || d.Models[1].ID != f.reference.ID || d.Models[1].Role != shared.RoleReference {
		t.Errorf("detail models: %+v", d.Models)
	}
	for _, it := range d.Items {
		if it.Target == it.Label || it.Conferrability < 0.01 || it.Conferrability > 1 || len(it.Labels) != 2 {
			t.Errorf("item %+v breaks the selection rule", it)
		}
		for m := range it.Labels {
			if it.Agree[m] != (it.Labels[m] == it.Target) {
				t.Errorf("item %d: agree %v but label %d, target %d", it.Index, it.Agree[m], it.Labels[m], it.Target)
			}
		}
	}

	t.Run("images", func(t *testing.T) {
		pix := map[string][]byte{}
		for _, name := range []string{"original", "perturbation", "fingerprint"} {
			resp, err := http.Get(ts.http.URL + "/api/fingerprints/" + f.fp.ID + "/items/0/" + name + ".png")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			img, err := png.Decode(bytes.NewReader(b))
			if resp.StatusCode != http.StatusOK || err != nil || img.Bounds().Dx() != 28*8 || img.Bounds().Dy() != 28*8 {
				t.Fatalf("%s.png: %d, %v", name, resp.StatusCode, err)
			}
			pix[name] = b
		}
		if bytes.Equal(pix["original"], pix["fingerprint"]) {
			t.Error("the fingerprint image equals the original: no perturbation shown")
		}
		for _, bad := range []string{"/items/0/other.png", "/items/9999/original.png", "/items/-1/original.png", "/items/x/original.png"} {
			if code := ts.call("GET", "/api/fingerprints/"+f.fp.ID+bad, nil, nil); code != http.StatusNotFound {
				t.Errorf("%s: %d, want 404", bad, code)
			}
		}
	})

	t.Run("file", func(t *testing.T) {
		resp, err := http.Get(ts.http.URL + "/api/fingerprints/" + f.fp.ID + "/file")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		p := filepath.Join(t.TempDir(), "fp.safetensors")
		b, _ := io.ReadAll(resp.Body)
		os.WriteFile(p, b, 0o644)
		fp, err := fingerprint.Load(p)
		if err != nil {
			t.Fatalf("the downloaded file does not load: %v", err)
		}
		com, _ := fp.Commitment()
		if fp.N != f.fp.Count || com != f.fp.Commitment {
			t.Errorf("downloaded %d fingerprints, commitment %s; want %d, %s", fp.N, com, f.fp.Count, f.fp.Commitment)
		}
		if fp.Meta.Loss != "geometric" || !fp.Meta.BestIterate {
			t.Errorf("crafted with loss %q, best iterate %v; the job asked for geometric, true", fp.Meta.Loss, fp.Meta.BestIterate)
		}
	})

	t.Run("verify", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			model shared.ModelInfo
		}{{"source", f.source}, {"surrogate", f.surrogate}, {"reference", f.reference}} {
			var j shared.Job
			if code := ts.call("POST", "/api/verify", shared.VerifyArgs{Fingerprint: f.fp.ID, Model: tc.model.ID}, &j); code != http.StatusAccepted {
				t.Fatalf("%s: POST /api/verify: %d", tc.name, code)
			}
			c := ts.watch(j.ID)
			ev, seen := until(t, c, func(e shared.Event) bool { return e.Kind == shared.State && e.State.Final() })
			if ev.State != shared.JobCompleted {
				t.Fatalf("%s: verify ended %s: %s", tc.name, ev.State, ev.Message)
			}
			var states []shared.JobState
			var got *shared.Verdict
			for i, e := range seen {
				if e.Job != j.ID || (i > 0 && e.Seq <= seen[i-1].Seq) {
					t.Errorf("%s: event %d: job %q seq %d after %d", tc.name, i, e.Job, e.Seq, seen[max(i-1, 0)].Seq)
				}
				if e.Kind == shared.State {
					states = append(states, e.State)
				}
				if e.Kind == shared.Verdicts {
					got = e.Verdict
				}
			}
			if !slices.Equal(states, []shared.JobState{shared.JobQueued, shared.JobRunning, shared.JobCompleted}) {
				t.Errorf("%s: states %v", tc.name, states)
			}
			j = ts.wait(j.ID)
			v := j.Result.Verdict
			if got == nil || v == nil || got.Matches != v.Matches {
				t.Fatalf("%s: verdict event %+v, result %+v", tc.name, got, v)
			}
			agree := 0
			for i, it := range v.Items {
				if it.Agree {
					agree++
				}
				if it.Key != d.Items[i].Target || it.Agree != (it.Label == it.Key) {
					t.Errorf("%s: item %+v, key should be %d", tc.name, it, d.Items[i].Target)
				}
				// The detail labelled the same fingerprints with the same models.
				if tc.name != "source" && it.Label != d.Items[i].Labels[map[string]int{"surrogate": 0, "reference": 1}[tc.name]] {
					t.Errorf("%s: item %d labelled %d here, %d in the detail", tc.name, i, it.Label, d.Items[i].Labels[0])
				}
			}
			if v.N != f.fp.Count || v.Matches != agree || v.Accuracy != float64(agree)/float64(v.N) || v.Threshold != 0.7 ||
				v.Surrogate != (v.Interval[0] >= 0.7) || v.PValue != nil || v.Rule == "" || v.Commitment == "" {
				t.Errorf("%s: verdict %+v", tc.name, v)
			}
			// The keys are the source's labels: the source agrees on all.
			if tc.name == "source" && (v.Matches != v.N || v.Outcome == shared.OutcomeIndependent) {
				t.Errorf("the source itself: %d of %d, %q", v.Matches, v.N, v.Verdict)
			}
			if v.Calibrated {
				t.Errorf("%s: a verdict against the training references' rate says it is calibrated", tc.name)
			}
		}
		// Sequential verification needs a calibration: refused at request
		// time until the fingerprint has one, then calibrated verdicts.
		seq := shared.VerifyArgs{Fingerprint: f.fp.ID, Model: f.reference.ID, Sequential: true}
		if code := ts.call("POST", "/api/verify", seq, nil); code != http.StatusBadRequest {
			t.Errorf("sequential verification of an uncalibrated fingerprint: %d, want 400", code)
		}
		_, path, err := ts.store.Fingerprint(context.Background(), f.fp.ID)
		if err != nil {
			t.Fatal(err)
		}
		fp, err := fingerprint.Load(path)
		if err != nil {
			t.Fatal(err)
		}
		var ms []fingerprint.IndependentModel
		for i := range 12 {
			ms = append(ms, fingerprint.IndependentModel{Suspect: shifted{fp: fp, every: 2 + i%5, name: fmt.Sprint(i)}, Arch: "fake"})
		}
		cal, err := fingerprint.Calibrate(context.Background(), fp, ms, 0.01)
		if err != nil {
			t.Fatal(err)
		}
		if err := cal.Save(fingerprint.CalibrationPath(path)); err != nil {
			t.Fatal(err)
		}
		for _, a := range []shared.VerifyArgs{{Fingerprint: f.fp.ID, Model: f.source.ID}, {Fingerprint: f.fp.ID, Model: f.source.ID, Sequential: true}} {
			j := ts.mustComplete(shared.JobRequest{Kind: shared.JobVerify, Verify: &a})
			v := j.Result.Verdict
			if v == nil || !v.Calibrated || v.PValue == nil || v.Null == nil || v.Null.Models != 12 || v.Outcome != shared.OutcomeDerived || (a.Sequential != (v.Sequential != nil)) {
				t.Errorf("calibrated verdict (sequential %v): %+v", a.Sequential, v)
			}
			// The calibration recorded the models' true-class answers: the
			// verdict carries the evasion check, which the source passes.
			if v != nil && (v.Evasion == nil || v.Evasion.Evasive || v.Evasion.Random != 1.0/9) {
				t.Errorf("calibrated verdict (sequential %v): evasion check %+v, want made and passed", a.Sequential, v.Evasion)
			}
		}
		if err := os.Remove(fingerprint.CalibrationPath(path)); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("a zero τ and a zero dropout reach the attack", func(t *testing.T) {
		j := ts.mustComplete(shared.JobRequest{Kind: shared.JobExtract, Extract: &shared.ExtractArgs{
			DataArgs: shared.DataArgs{Limit: 200}, Source: f.source.ID, Surrogates: []string{f.surrogate.ID}, References: []string{f.reference.ID},
			Eps: 0.25, Alpha: 0.025, Steps: 5, Tau: new(0.0), Dropout: new(0.0), Candidates: 20, Batch: 20}})
		_, path, err := ts.store.Fingerprint(context.Background(), j.Result.Fingerprint.ID)
		if err != nil {
			t.Fatal(err)
		}
		fp, err := fingerprint.Load(path)
		if err != nil {
			t.Fatal(err)
		}
		if fp.Meta.Tau != 0 || fp.Meta.Dropout != 0 {
			t.Errorf("τ = %g, dropout = %g; want the zeros the request asked for", fp.Meta.Tau, fp.Meta.Dropout)
		}
	})

	t.Run("derive", func(t *testing.T) {
		j := ts.mustComplete(shared.JobRequest{Kind: shared.JobDerive, Derive: &shared.DeriveArgs{Source: f.source.ID, Attack: "prune", Name: "pruned",
			DataArgs: shared.DataArgs{Limit: 200}, Fraction: 0.3}})
		m := j.Result.Models[0]
		if m.Role != shared.RoleDerived || m.Derivation != "prune" || m.Parent != f.source.ID || m.Name != "pruned" || m.TestAcc < 0.3 {
			t.Errorf("derived %+v", m)
		}
	})

	var jobs []shared.Job
	ts.call("GET", "/api/jobs", nil, &jobs)
	for i := 1; i < len(jobs); i++ {
		if jobs[i-1].Created.Before(jobs[i].Created) {
			t.Errorf("jobs not newest first: %s before %s", jobs[i-1].ID, jobs[i].ID)
		}
	}
	ts.checkStored(f)
}

func TestBadRequests(t *testing.T) {
	f, dir := copyFixture(t)
	ts := start(t, Config{Dir: dir})
	// A model of another dataset (only its record is read: the file's
	// content does not matter, its name must be its sha256).
	sum, path, _, err := ts.art.write(strings.NewReader("weights of a CIFAR-10 model"), 1<<10, ".safetensors")
	if err != nil {
		t.Fatal(err)
	}
	cifar := shared.ModelInfo{ID: sum, SHA256: sum, Name: "cifar-model", Arch: "resnet20", Role: shared.RoleSource, Dataset: "cifar10", Created: time.Now()}
	if err := ts.store.PutModel(context.Background(), cifar, path); err != nil {
		t.Fatal(err)
	}
	big := `{"kind":"train","train":{"name":"` + strings.Repeat("x", 2<<20) + `"}}`
	for _, tc := range []struct {
		name, method, path, body string
		header                   map[string]string
		want                     int
		says                     string
	}{
		{"unknown kind", "POST", "/api/jobs", `{"kind":"bake","train":{}}`, nil, 400, "job kind"},
		{"no arguments", "POST", "/api/jobs", `{"kind":"train"}`, nil, 400, "exactly one"},
		{"two kinds", "POST", "/api/jobs", `{"kind":"train","train":{},"derive":{}}`, nil, 400, "exactly one"},
		{"bad arch", "POST", "/api/jobs", `{"kind":"train","train":{"arch":"nope"}}`, nil, 400, `arch "nope"`},
		{"bad dataset", "POST", "/api/jobs", `{"kind":"train","train":{"dataset":"imagenet-9000"}}`, nil, 400, "dataset"},
		{"too many epochs", "POST", "/api/jobs", `{"kind":"train","train":{"epochs":100000}}`, nil, 400, "epochs"},
		{"unknown field", "POST", "/api/jobs", `{"kind":"train","train":{},"colour":"red"}`, nil, 400, "unknown field"},
		{"not JSON", "POST", "/api/jobs", `kind=train`, nil, 400, "reading the request"},
		{"not JSON type", "POST", "/api/jobs", `{}`, map[string]string{"Content-Type": "text/plain"}, 400, "JSON body"},
		{"body too large", "POST", "/api/jobs", big, nil, 413, "over"},
		{"unknown teacher", "POST", "/api/jobs", `{"kind":"train","train":{"teacher":"abc"}}`, nil, 400, `no stored model "abc"`},
		{"teacher of another dataset", "POST", "/api/jobs", `{"kind":"train","train":{"teacher":"` + cifar.ID + `"}}`, nil, 400, "cifar-model was trained on cifar10, not fashion-mnist"},
		{"training model of another dataset", "POST", "/api/jobs", `{"kind":"extract","extract":{"source":"` + f.source.ID + `","surrogates":["` + cifar.ID + `"],"references":["` + f.reference.ID + `"]}}`, nil, 400, "trained on cifar10"},
		{"unknown attack", "POST", "/api/jobs", `{"kind":"derive","derive":{"source":"` + f.source.ID + `","attack":"theft"}}`, nil, 400, "attack"},
		{"unknown start points", "POST", "/api/jobs", `{"kind":"extract","extract":{"source":"` + f.source.ID + `","surrogates":["` + f.surrogate.ID + `"],"references":["` + f.reference.ID + `"],"start":"validation"}}`, nil, 400, `start "validation"`},
		{"tau_surr above 1", "POST", "/api/jobs", `{"kind":"extract","extract":{"source":"` + f.source.ID + `","surrogates":["` + f.surrogate.ID + `"],"references":["` + f.reference.ID + `"],"tau_surr":1.5}}`, nil, 400, "tau_surr must lie in [0,1]"},
		{"a training model as a calibration model", "POST", "/api/jobs", `{"kind":"extract","extract":{"source":"` + f.source.ID + `","surrogates":["` + f.surrogate.ID + `"],"references":["` + f.reference.ID + `"],"calibration":["` + f.reference.ID + `","` + f.surrogate.ID + `"]}}`, nil, 400, "takes part in the extraction"},
		{"one calibration model", "POST", "/api/jobs", `{"kind":"extract","extract":{"source":"` + f.source.ID + `","surrogates":["` + f.surrogate.ID + `"],"references":["` + f.reference.ID + `"],"calibration":["` + f.source.ID + `"]}}`, nil, 400, "at least two independent models"},
		{"extract without references", "POST", "/api/jobs", `{"kind":"extract","extract":{"source":"` + f.source.ID + `","surrogates":["` + f.surrogate.ID + `"]}}`, nil, 400, "reference"},
		{"unknown fingerprint", "POST", "/api/verify", `{"fingerprint":"nope","model":"` + f.source.ID + `"}`, nil, 400, "no stored fingerprint"},
		{"two suspects", "POST", "/api/verify", `{"fingerprint":"` + f.fp.ID + `","model":"` + f.source.ID + `","endpoint":"https://example.com/v2/models/m"}`, nil, 400, "exactly one"},
		{"no suspect", "POST", "/api/verify", `{"fingerprint":"` + f.fp.ID + `"}`, nil, 400, "exactly one"},
		{"loopback endpoint", "POST", "/api/verify", `{"fingerprint":"` + f.fp.ID + `","endpoint":"http://127.0.0.1:8500/v2/models/m/infer"}`, nil, 400, "--allow-private"},
		{"localhost endpoint", "POST", "/api/verify", `{"fingerprint":"` + f.fp.ID + `","endpoint":"http://localhost:8500/v2/models/m/infer"}`, nil, 400, "refused"},
		{"metadata endpoint", "POST", "/api/verify", `{"fingerprint":"` + f.fp.ID + `","endpoint":"http://169.254.169.254/v1/models/m"}`, nil, 400, "link-local"},
		{"private endpoint", "POST", "/api/verify", `{"fingerprint":"` + f.fp.ID + `","endpoint":"http://10.1.2.3/v1/models/m"}`, nil, 400, "private"},
		{"mapped loopback", "POST", "/api/verify", `{"fingerprint":"` + f.fp.ID + `","endpoint":"http://[::ffff:127.0.0.1]/v1/models/m"}`, nil, 400, "refused"},
		{"ftp endpoint", "POST", "/api/verify", `{"fingerprint":"` + f.fp.ID + `","endpoint":"ftp://example.com/m"}`, nil, 400, "ftp"},
		{"bad protocol", "POST", "/api/verify", `{"fingerprint":"` + f.fp.ID + `","endpoint":"https://example.com/m","protocol":"carrier-pigeon"}`, nil, 400, "protocol"},
		{"bad theta", "POST", "/api/verify", `{"fingerprint":"` + f.fp.ID + `","model":"` + f.source.ID + `","theta":7}`, nil, 400, "theta"},
		{"foreign origin", "POST", "/api/jobs", `{"kind":"train","train":{}}`, map[string]string{"Origin": "http://evil.example"}, 403, "origin"},
		{"unknown job", "GET", "/api/jobs/12345", ``, nil, 404, "not found"},
		{"job ID not a number", "GET", "/api/jobs/abc", ``, nil, 404, "not found"},
		{"cancel unknown job", "POST", "/api/jobs/777/cancel", ``, nil, 404, "not found"},
		{"unknown model", "GET", "/api/models/nope", ``, nil, 404, "not found"},
		{"unknown report", "GET", "/api/reports/x/README.md", ``, nil, 404, "not found"},
		{"unknown route", "GET", "/api/teapot", ``, nil, 404, "not found"},
		{"events of unknown job", "GET", "/api/events?job=999", ``, nil, 404, "not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, ts.http.URL+tc.path, strings.NewReader(tc.body))
			if tc.body != "" {
				req.Header.Set("Content-Type", "application/json")
			}
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			var e shared.APIError
			if code := ts.do(req, &e); code != tc.want || !strings.Contains(e.Error, tc.says) {
				t.Errorf("%d %q, want %d saying %q", code, e.Error, tc.want, tc.says)
			}
		})
	}
	var jobs []shared.Job
	ts.call("GET", "/api/jobs", nil, &jobs)
	if len(jobs) != 4 {
		t.Errorf("%d jobs after bad requests, want the fixture's 4", len(jobs))
	}
	ts.checkStored(f)
}

// upload posts a multipart verification.
func (ts *testServer) upload(file []byte, fields map[string]string) (int, shared.Job, shared.APIError) {
	ts.t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	for k, v := range fields {
		mw.WriteField(k, v)
	}
	if file != nil {
		w, _ := mw.CreateFormFile("file", "model.onnx")
		w.Write(file)
	}
	mw.Close()
	req, _ := http.NewRequest("POST", ts.http.URL+"/api/verify", &body)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		ts.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var j shared.Job
	var e shared.APIError
	if resp.StatusCode == http.StatusAccepted {
		if err := json.Unmarshal(b, &j); err != nil {
			ts.t.Fatal(err)
		}
	} else {
		json.Unmarshal(b, &e)
	}
	return resp.StatusCode, j, e
}

func TestUploads(t *testing.T) {
	f, dir := copyFixture(t)
	const limit = 60_000
	ts := start(t, Config{Dir: dir, MaxUpload: limit})
	good, err := os.ReadFile("testdata/mlp_28x28.onnx")
	if err != nil {
		t.Fatal(err)
	}
	junk := bytes.Repeat([]byte("not an onnx model "), 200)
	fpField := map[string]string{"fingerprint": f.fp.ID}
	for _, tc := range []struct {
		name   string
		file   []byte
		fields map[string]string
		want   int
		says   string
	}{
		{"oversized", bytes.Repeat([]byte{7}, limit+1), fpField, 413, "limit of 60000 bytes"},
		{"corrupt", junk, fpField, 400, "not usable"},
		{"truncated", good[:len(good)/2], fpField, 400, "not usable"},
		{"wrong image size", good, map[string]string{"fingerprint": f.fp.ID, "layout": "nhwc"}, 400, "not usable"},
		{"no file", nil, fpField, 400, `no part "file"`},
		{"no fingerprint", good, map[string]string{}, 400, "fingerprint ID is required"},
		{"bad layout", good, map[string]string{"fingerprint": f.fp.ID, "layout": "diagonal"}, 400, "layout"},
		{"endpoint-only layout", good, map[string]string{"fingerprint": f.fp.ID, "layout": "flat"}, 400, "takes layout auto, nchw or nhwc"},
		{"bad theta", good, map[string]string{"fingerprint": f.fp.ID, "theta": "high"}, 400, "theta"},
		{"bad mean", good, map[string]string{"fingerprint": f.fp.ID, "mean": "0.5,zebra"}, 400, "mean"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, e := ts.upload(tc.file, tc.fields)
			if code != tc.want || !strings.Contains(e.Error, tc.says) {
				t.Errorf("%d %q, want %d saying %q", code, e.Error, tc.want, tc.says)
			}
		})
	}
	t.Run("valid", func(t *testing.T) {
		code, j, e := ts.upload(good, map[string]string{"fingerprint": f.fp.ID, "name": "their model", "theta": "0.6", "layout": "auto"})
		if code != http.StatusAccepted {
			t.Fatalf("%d %s", code, e.Error)
		}
		j = ts.wait(j.ID)
		if j.State != shared.JobCompleted || j.Result.Verdict == nil {
			t.Fatalf("upload verification: %s: %s", j.State, j.Error)
		}
		v := j.Result.Verdict
		if v.Suspect != "their model" || v.N != f.fp.Count || v.Threshold != 0.6 || len(v.Items) != v.N || j.Args.Verify.Upload == "" {
			t.Errorf("verdict %+v", v)
		}
	})
	// Refused files are gone; the accepted one is kept and recorded.
	stray, _ := filepath.Glob(filepath.Join(dir, "artifacts", ".tmp-*"))
	onnxFiles, _ := filepath.Glob(filepath.Join(dir, "artifacts", "*.onnx"))
	if len(stray) > 0 || len(onnxFiles) != 1 {
		t.Fatalf("after the uploads: temporaries %v, ONNX files %v; want none and one", stray, onnxFiles)
	}
	if _, err := ts.store.Upload(context.Background(), strings.TrimSuffix(filepath.Base(onnxFiles[0]), ".onnx")); err != nil {
		t.Errorf("the accepted upload is not recorded: %v", err)
	}
	ts.checkStored(f)
}

// serveModel serves a stored model as a KServe endpoint on 127.0.0.1.
func serveModel(t *testing.T, dir string, m shared.ModelInfo) *httptest.Server {
	t.Helper()
	nm, _, err := nn.Load(filepath.Join(dir, "artifacts", m.ID+".safetensors"), -1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nm.Free)
	h, err := predict.New(nm, predict.Options{Name: "suspect", Classes: nm.Spec.Classes, C: 1, H: 28, W: 28, Answer: "index"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func TestEndpoints(t *testing.T) {
	f, dir := copyFixture(t)
	ts := start(t, Config{Dir: dir, AllowPrivate: true, EndpointTimeout: 300 * time.Millisecond})

	live := serveModel(t, dir, f.surrogate)
	// A port that was just closed refuses connections.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String() + "/v2/models/suspect/infer"
	ln.Close()
	// A server that answers nothing within the timeout.
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer slow.Close()
	defer close(release)

	local := ts.mustComplete(shared.JobRequest{Kind: shared.JobVerify, Verify: &shared.VerifyArgs{Fingerprint: f.fp.ID, Model: f.surrogate.ID}})
	for _, tc := range []struct {
		name, url string
		ok        bool
		says      []string
	}{
		{"live", live.URL + "/v2/models/suspect/infer", true, nil},
		{"dead", dead, false, []string{"connection refused"}},
		{"slow", slow.URL + "/v2/models/suspect/infer", false, []string{"no answer within 300ms"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var j shared.Job
			if code := ts.call("POST", "/api/verify", shared.VerifyArgs{Fingerprint: f.fp.ID, Endpoint: tc.url, Protocol: "kserve"}, &j); code != http.StatusAccepted {
				t.Fatalf("POST /api/verify: %d", code)
			}
			j = ts.wait(j.ID)
			if !tc.ok {
				if j.State != shared.JobFailed {
					t.Fatalf("state %s, want failed", j.State)
				}
				for _, s := range tc.says {
					if !strings.Contains(j.Error, s) {
						t.Errorf("error %q does not say %q", j.Error, s)
					}
				}
				return
			}
			if j.State != shared.JobCompleted {
				t.Fatalf("state %s: %s", j.State, j.Error)
			}
			// The endpoint serves the surrogate: the same answers as locally.
			got, want := j.Result.Verdict, local.Result.Verdict
			for i := range want.Items {
				if got.Items[i].Label != want.Items[i].Label {
					t.Errorf("item %d: endpoint %d, local %d", i, got.Items[i].Label, want.Items[i].Label)
				}
			}
			if got.Matches != want.Matches || got.N != want.N || got.Queries < got.N || want.Queries != want.N {
				t.Errorf("endpoint verdict %d/%d (%d queries), local %d/%d (%d queries)", got.Matches, got.N, got.Queries, want.Matches, want.N, want.Queries)
			}
		})
	}
	ts.checkStored(f)
}

// long is a training job that runs long enough to be caught running.
func long(epochs int) shared.JobRequest {
	return shared.JobRequest{Kind: shared.JobTrain, Train: &shared.TrainArgs{Name: "long", Arch: "cnn", Epochs: epochs,
		DataArgs: shared.DataArgs{Limit: 1000}, Optimizer: "adam", LR: 1e-3, BatchSize: 32, NoAugment: true}}
}

// waitRunning follows a job's events until it reports progress.
func (ts *testServer) waitRunning(id string) {
	ts.t.Helper()
	c := ts.watch(id)
	until(ts.t, c, func(e shared.Event) bool {
		if e.Kind == shared.State && e.State.Final() {
			ts.t.Fatalf("job %s ended (%s) before it could be caught running", id, e.State)
		}
		return e.Kind == shared.Progress
	})
	c.Close()
}

func TestCancel(t *testing.T) {
	f, dir := copyFixture(t)
	ts := start(t, Config{Dir: dir})
	running := ts.submit(long(50))
	queued := ts.submit(tiny("never", "defender", 9, "", 300))
	ts.waitRunning(running.ID)

	// One worker per device: the second job waits, and cancels at once.
	var j shared.Job
	if code := ts.call("POST", "/api/jobs/"+queued.ID+"/cancel", nil, &j); code != http.StatusOK || j.State != shared.JobCancelled || j.Started != nil {
		t.Fatalf("cancelling the queued job: %d, %+v", code, j)
	}
	if code := ts.call("POST", "/api/jobs/"+running.ID+"/cancel", nil, &j); code != http.StatusOK || j.State.Final() {
		t.Fatalf("cancelling the running job: %d, %s", code, j.State)
	}
	j = ts.wait(running.ID)
	if j.State != shared.JobCancelled || !strings.Contains(j.Error, "cancelled by request while running") {
		t.Fatalf("running job after cancel: %s: %q", j.State, j.Error)
	}
	// Cancelling a finished job changes nothing.
	done := ts.wait(f.extractJob)
	if code := ts.call("POST", "/api/jobs/"+f.extractJob+"/cancel", nil, &j); code != http.StatusOK || j.State != shared.JobCompleted || !j.Finished.Equal(*done.Finished) {
		t.Errorf("cancelling a completed job: %d, %s", code, j.State)
	}
	if q := ts.wait(queued.ID); q.State != shared.JobCancelled || q.Started != nil {
		t.Errorf("the queued job ran after all: %+v", q)
	}
	var models []shared.ModelInfo
	ts.call("GET", "/api/models", nil, &models)
	if len(models) != 3 {
		t.Errorf("%d models after cancelling, want the fixture's 3", len(models))
	}
	ts.checkStored(f)
}

func TestRestart(t *testing.T) {
	f, dir := copyFixture(t)
	ts := start(t, Config{Dir: dir})
	j := ts.submit(long(10)) // long enough to be stopped mid-way on any machine
	ts.waitRunning(j.ID)
	ts.stop()

	ts2 := start(t, Config{Dir: dir})
	if _, err := New(context.Background(), Config{Dir: dir, Device: "cpu"}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("a second server on the same folder: %v, want it refused", err)
	}
	var mid shared.Job
	ts2.call("GET", "/api/jobs/"+j.ID, nil, &mid)
	if mid.State.Final() {
		t.Fatalf("after a graceful stop the job is %s: %s", mid.State, mid.Error)
	}
	done := ts2.wait(j.ID)
	if done.State != shared.JobCompleted || done.Attempt != 2 || len(done.Result.Models) != 1 {
		t.Fatalf("resumed job: %s, attempt %d: %s", done.State, done.Attempt, done.Error)
	}
	// Its history says what happened.
	evs, err := ts2.store.Events(context.Background(), j.ID)
	if err != nil {
		t.Fatal(err)
	}
	var notes []string
	for _, e := range evs {
		if e.Kind == shared.State {
			notes = append(notes, string(e.State)+": "+e.Message)
		}
	}
	if !slices.ContainsFunc(notes, func(s string) bool { return strings.Contains(s, "the server stopped during attempt 1") }) {
		t.Errorf("the job's events do not record the interruption: %q", notes)
	}
	ts2.checkStored(f)
}

func TestCrash(t *testing.T) {
	for _, tc := range []struct {
		name     string
		noResume bool
		want     shared.JobState
	}{
		{"resumed", false, shared.JobRunning},
		{"interrupted", true, shared.JobInterrupted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, dir := copyFixture(t)
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), "CONFERRAL_SERVER_HELPER="+dir)
			out, _ := cmd.StdoutPipe()
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Process.Kill()
			line, err := bufio.NewReader(out).ReadString('\n')
			if err != nil || !strings.HasPrefix(line, "ADDR ") {
				t.Fatalf("the child server said %q: %v", line, err)
			}
			child := &testServer{http: &httptest.Server{URL: "http://" + strings.TrimSpace(strings.TrimPrefix(line, "ADDR "))}, t: t}
			j := child.submit(long(50))
			child.waitRunning(j.ID)
			cmd.Process.Kill() // no shutdown: the job's rows still say running
			cmd.Wait()

			ts := start(t, Config{Dir: dir, NoResume: tc.noResume})
			var after shared.Job
			ts.call("GET", "/api/jobs/"+j.ID, nil, &after)
			if tc.noResume {
				if after.State != shared.JobInterrupted || !strings.Contains(after.Error, "stopped while attempt 1 ran") {
					t.Fatalf("after the crash: %s: %q", after.State, after.Error)
				}
			} else {
				ts.waitRunning(j.ID)
				ts.call("GET", "/api/jobs/"+j.ID, nil, &after)
				if after.State != shared.JobRunning || after.Attempt != 2 {
					t.Fatalf("after the crash: %s, attempt %d: %q", after.State, after.Attempt, after.Error)
				}
				ts.call("POST", "/api/jobs/"+j.ID+"/cancel", nil, nil)
				if c := ts.wait(j.ID); c.State != shared.JobCancelled {
					t.Errorf("cancelling the resumed job: %s", c.State)
				}
			}
			// The queue is not stuck: a new job runs.
			ts.mustComplete(tiny("after", "defender", 5, "", 300))
			ts.checkStored(f)
		})
	}
}

func TestAuth(t *testing.T) {
	dir := t.TempDir()
	if _, err := New(context.Background(), Config{Dir: dir, Device: "cpu", Addr: "0.0.0.0:8080"}); err == nil || !strings.Contains(err.Error(), "requires a token") {
		t.Fatalf("listening beyond loopback without a token: %v", err)
	}
	const token = "s3cret-token"
	ts := start(t, Config{Dir: dir, Addr: "0.0.0.0:8080", Token: token, Origins: []string{"https://app.example"}})
	get := func(path string, header map[string]string) *http.Response {
		req, _ := http.NewRequest("GET", ts.http.URL+path, nil)
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	for _, tc := range []struct {
		name, path string
		header     map[string]string
		want       int
	}{
		{"no token", "/api/health", nil, 401},
		{"wrong token", "/api/health", map[string]string{"Authorization": "Bearer nope"}, 401},
		{"bearer", "/api/health", map[string]string{"Authorization": "Bearer " + token}, 200},
		{"query", "/api/models?token=" + token, nil, 200},
		{"cookie", "/api/jobs", map[string]string{"Cookie": "conferral_token=" + token}, 200},
		{"app without token", "/", nil, 401},
		{"app with token", "/?token=" + token, nil, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if resp := get(tc.path, tc.header); resp.StatusCode != tc.want {
				t.Errorf("%d, want %d", resp.StatusCode, tc.want)
			}
		})
	}
	// A page of an allowed origin may call the API (CORS), others may not.
	for _, tc := range []struct {
		origin, method string
		want           int
		allowed        bool
	}{
		{"https://app.example", "OPTIONS", 204, true},
		{"https://app.example", "GET", 200, true},
		{"https://evil.example", "OPTIONS", 401, false},
		{"https://evil.example", "GET", 200, false}, // the browser keeps the answer from the page
	} {
		req, _ := http.NewRequest(tc.method, ts.http.URL+"/api/health", nil)
		req.Header.Set("Origin", tc.origin)
		if tc.method == "GET" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("Access-Control-Allow-Origin") == tc.origin; resp.StatusCode != tc.want || got != tc.allowed {
			t.Errorf("%s from %s: %d, allowed %v; want %d, %v", tc.method, tc.origin, resp.StatusCode, got, tc.want, tc.allowed)
		}
	}
	// Opening the app with ?token= leaves the cookie the websocket needs.
	resp := get("/?token="+token, nil)
	var c *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == "conferral_token" {
			c = ck
		}
	}
	if c == nil || c.Value != token || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode {
		t.Fatalf("cookie %+v", c)
	}
	ws := "ws" + strings.TrimPrefix(ts.http.URL, "http") + "/api/events"
	for _, tc := range []struct {
		name   string
		header http.Header
		ok     bool
	}{
		{"no token", http.Header{}, false},
		{"cookie, own origin", http.Header{"Cookie": {"conferral_token=" + token}, "Origin": {ts.http.URL}}, true},
		{"cookie, allowed origin", http.Header{"Cookie": {"conferral_token=" + token}, "Origin": {"https://app.example"}}, true},
		{"cookie, foreign origin", http.Header{"Cookie": {"conferral_token=" + token}, "Origin": {"https://evil.example"}}, false},
	} {
		t.Run("websocket "+tc.name, func(t *testing.T) {
			conn, resp, err := websocket.DefaultDialer.Dial(ws, tc.header)
			if conn != nil {
				conn.Close()
			}
			if (err == nil) != tc.ok {
				t.Errorf("dial: %v (%v), want ok=%v", err, resp, tc.ok)
			}
		})
	}
}

func TestExperimentReport(t *testing.T) {
	for _, tc := range []struct {
		study string
		want  []string // in the report's README.md
	}{
		{"conferrability", []string{"Table 1", "C-BIM best iterate"}},
		{"fingerprint", []string{"| τ_S |", "loss=ce", "loss=geometric", "test-surrogate-mlp-0", "10 start points"}},
	} {
		t.Run(tc.study, func(t *testing.T) { experimentReport(t, tc.study, tc.want) })
	}
}

// experimentReport runs one study as a server job at toy scale and reads
// its report back through the API.
func experimentReport(t *testing.T, study string, want []string) {
	ts := start(t, Config{Dir: t.TempDir()})
	j := ts.mustComplete(shared.JobRequest{Kind: shared.JobExperiment, Experiment: &shared.ExperimentArgs{
		Study: study, Name: "tiny", Limit: 300, Archs: []string{"mlp"}, SourceArch: "mlp", Per: 1, Epochs: 1,
		EpsSweep: []float64{0.1}, Focus: 0.1, Points: 10}})
	r := j.Result.Report
	if r == nil || r.Name != "tiny" || len(r.Files) < 2 || r.Files[0] != "README.md" {
		t.Fatalf("report %+v", r)
	}
	var reports []shared.ReportInfo
	ts.call("GET", "/api/reports", nil, &reports)
	if len(reports) != 1 || reports[0].Name != "tiny" {
		t.Fatalf("reports %+v", reports)
	}
	for _, f := range r.Files {
		resp, err := http.Get(ts.http.URL + "/api/reports/tiny/" + f)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || len(b) == 0 {
			t.Errorf("%s: %d, %d bytes", f, resp.StatusCode, len(b))
		}
		if strings.HasSuffix(f, ".png") {
			if _, err := png.Decode(bytes.NewReader(b)); err != nil {
				t.Errorf("%s: %v", f, err)
			}
		}
		if f == "README.md" {
			for _, w := range want {
				if !strings.Contains(string(b), w) {
					t.Errorf("the %s report lacks %q", study, w)
				}
			}
		}
	}
	for _, bad := range []string{"../conferral.db", "..%2fconferral.db", "nothere.png"} {
		if code := ts.call("GET", "/api/reports/tiny/"+bad, nil, nil); code != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", bad, code)
		}
	}
	// The job's progress was recorded along the way.
	if j.Progress == nil || j.Progress.Job != j.ID || j.Progress.Seq == 0 {
		t.Errorf("progress %+v", j.Progress)
	}
}

// TestOrphan restarts a server whose process died between recording a job
// and queueing it: the job is queued at start and runs.
func TestOrphan(t *testing.T) {
	dir := t.TempDir()
	ts := start(t, Config{Dir: dir})
	ts.stop()
	st, db := openStore(t, filepath.Join(dir, "conferral.db"))
	j, err := st.NewJob(context.Background(), tiny("orphan", "defender", 4, "", 300))
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	ts = start(t, Config{Dir: dir})
	if done := ts.wait(j.ID); done.State != shared.JobCompleted || done.Attempt != 1 {
		t.Fatalf("the orphaned job: %s, attempt %d: %s", done.State, done.Attempt, done.Error)
	}
	// Queueing is unique by job: queueing it again is a no-op.
	q1, _ := ts.store.QueueID(context.Background(), j.ID)
	if err := ts.enqueue(context.Background(), j.ID); err != nil {
		t.Fatal(err)
	}
	if q2, _ := ts.store.QueueID(context.Background(), j.ID); q2 != q1 {
		t.Errorf("queued twice: queue rows %d and %d", q1, q2)
	}
}

// shifted is an independent model made up for a calibration: it agrees
// with the keys on every n-th fingerprint only and, elsewhere, mostly
// names the true class, as an honest classifier does.
type shifted struct {
	fp    *fingerprint.Fingerprint
	every int
	name  string
}

func (s shifted) String() string { return "shifted-" + s.name }

func (s shifted) Classify(_ context.Context, b suspect.Images) ([]int64, error) {
	out := make([]int64, b.N)
	for i := range out {
		out[i] = (s.fp.Keys[i] + 1) % int64(len(s.fp.Meta.Classes))
		switch {
		case i%s.every == 0:
			out[i] = s.fp.Keys[i]
		case i%4 != 0 && s.fp.Labels[i] != s.fp.Keys[i]:
			out[i] = s.fp.Labels[i] // an honest model's wrong answers mostly name the true class
		}
	}
	return out, nil
}
