package server

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/conferral/conferral/backend/fingerprint"
	"github.com/conferral/conferral/shared"
)

// TestNaturalFingerprint: an extract job with natural:true keeps test
// inputs the source misclassifies, unperturbed, and the API says so —
// in the job's result, the listing and the detail — while C-BIM's
// fingerprints, and records written before records named the attack, say
// "cbim".
func TestNaturalFingerprint(t *testing.T) {
	f, dir := copyFixture(t)
	ts := start(t, Config{Dir: dir})
	j := ts.mustComplete(shared.JobRequest{Kind: shared.JobExtract, Extract: &shared.ExtractArgs{
		DataArgs: shared.DataArgs{Limit: 200}, Source: f.source.ID, Surrogates: []string{f.surrogate.ID}, References: []string{f.reference.ID},
		Natural: true, Tau: new(0.0), Candidates: 30, Batch: 30}})
	info := j.Result.Fingerprint
	if info == nil || info.Attack != shared.AttackNatural || !info.Natural() || info.Eps != 0 || info.Loss != "" || info.Count < 1 || info.Count != info.Candidates {
		t.Fatalf("the job's fingerprint: %+v; want natural ones with no ε and no loss, every start point kept (τ = 0)", info)
	}
	if !strings.Contains(info.Name, "natural") || strings.Contains(info.Name, "eps") {
		t.Errorf("default name %q: want it to say natural, not ε", info.Name)
	}
	if msg := j.Result.Message; !strings.Contains(msg, "natural inputs the source misclassifies") || strings.Contains(msg, "ε") {
		t.Errorf("result message %q: want natural errors and no ε", msg)
	}

	_, path, err := ts.store.Fingerprint(context.Background(), info.ID)
	if err != nil {
		t.Fatal(err)
	}
	fp, err := fingerprint.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if fp.Meta.Attack != fingerprint.AttackNatural || fp.Meta.Eps != 0 || fp.Meta.Steps != 0 || !bytes.Equal(fp.Images, fp.Originals) {
		t.Errorf("file: attack %q, ε %g, %d steps, images equal originals %v; want natural, 0, 0, true",
			fp.Meta.Attack, fp.Meta.Eps, fp.Meta.Steps, bytes.Equal(fp.Images, fp.Originals))
	}

	// A record from before records named the attack is C-BIM's.
	old := shared.FingerprintInfo{ID: strings.Repeat("0", 64), Name: "before-attack", Source: f.source.ID, Eps: 0.1, Count: 1, Created: time.Now().UTC()}
	if err := ts.store.PutFingerprint(context.Background(), old, path); err != nil {
		t.Fatal(err)
	}
	var fps []shared.FingerprintInfo
	if code := ts.call("GET", "/api/fingerprints", nil, &fps); code != http.StatusOK {
		t.Fatalf("GET /api/fingerprints: %d", code)
	}
	attacks := map[string]string{}
	for _, x := range fps {
		attacks[x.ID] = x.Attack
	}
	want := map[string]string{f.fp.ID: shared.AttackCBIM, info.ID: shared.AttackNatural, old.ID: shared.AttackCBIM}
	for id, a := range want {
		if attacks[id] != a {
			t.Errorf("listing: fingerprint %s says attack %q, want %q (all: %v)", id[:8], attacks[id], a, attacks)
		}
	}
	// The raw JSON names it too (the app reads "attack").
	resp, err := http.Get(ts.http.URL + "/api/fingerprints")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(raw, []byte(`"attack":"natural"`)) || !bytes.Contains(raw, []byte(`"attack":"cbim"`)) {
		t.Errorf("listing JSON names no attack: %s", raw)
	}

	var d shared.FingerprintDetail
	if code := ts.call("GET", "/api/fingerprints/"+info.ID, nil, &d); code != http.StatusOK || d.Attack != shared.AttackNatural || len(d.Items) != info.Count {
		t.Fatalf("detail: %d, attack %q, %d items; want 200, natural, %d", code, d.Attack, len(d.Items), info.Count)
	}
	for _, it := range d.Items {
		// The keys are the source's labels of unperturbed inputs it gets wrong.
		if it.Target == it.Label {
			t.Errorf("item %d: the source's label %d is the true one: not an error of the source", it.Index, it.Target)
		}
	}
	var cb shared.FingerprintDetail
	if ts.call("GET", "/api/fingerprints/"+f.fp.ID, nil, &cb); cb.Attack != shared.AttackCBIM {
		t.Errorf("C-BIM detail says attack %q", cb.Attack)
	}

	// What the app shows for a natural example: the image is its original.
	pix := map[string][]byte{}
	for _, name := range []string{"original", "fingerprint"} {
		resp, err := http.Get(ts.http.URL + "/api/fingerprints/" + info.ID + "/items/0/" + name + ".png")
		if err != nil {
			t.Fatal(err)
		}
		pix[name], _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s.png: %d", name, resp.StatusCode)
		}
	}
	if !bytes.Equal(pix["original"], pix["fingerprint"]) {
		t.Error("a natural fingerprint's image differs from its original")
	}
	if !slices.ContainsFunc(fps, func(x shared.FingerprintInfo) bool { return x.ID == info.ID && x.Name == info.Name }) {
		t.Errorf("the natural fingerprint %s is not listed under its name %q", info.ID[:8], info.Name)
	}
}

// TestNaturalRefusesCBIMSettings: a natural extraction that also sets
// C-BIM's settings is refused with 400 before anything is queued, and the
// message names exactly the fields the request set; the same settings on a
// C-BIM extraction, and a natural one with only the settings it uses,
// pass the check.
func TestNaturalRefusesCBIMSettings(t *testing.T) {
	f, dir := copyFixture(t)
	ts := start(t, Config{Dir: dir})
	models := `"source":"` + f.source.ID + `","surrogates":["` + f.surrogate.ID + `"],"references":["` + f.reference.ID + `"]`
	for _, tc := range []struct {
		name, fields string
		want         []string
	}{
		{"eps", `"eps":0.1`, []string{"eps"}},
		{"alpha and steps", `"alpha":0.02,"steps":5`, []string{"alpha", "steps"}},
		{"no dropout", `"dropout":0`, []string{"dropout"}},
		{"loss", `"loss":"ce"`, []string{"loss"}},
		{"best iterate", `"best_iterate":true`, []string{"best_iterate"}},
		{"input diversity", `"shift":2,"noise":0.05`, []string{"shift", "noise"}},
		{"all of them, with the settings that apply", `"eps":0.1,"alpha":0.02,"steps":5,"dropout":0.5,"loss":"linear","best_iterate":true,"shift":1,"noise":0.1,"tau":0.5,"tau_surr":0.5,"candidates":10,"batch":10,"seed":3,"start":"test"`,
			[]string{"eps", "alpha", "steps", "dropout", "loss", "best_iterate", "shift", "noise"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := `{"kind":"extract","extract":{` + models + `,"natural":true,` + tc.fields + `}}`
			req, _ := http.NewRequest("POST", ts.http.URL+"/api/jobs", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			var e shared.APIError
			code := ts.do(req, &e)
			_, list, ok := strings.Cut(e.Error, "; leave out ")
			if code != http.StatusBadRequest || !strings.HasPrefix(e.Error, "natural: C-BIM's settings do not apply") || !ok {
				t.Fatalf("%d %q; want 400 saying natural: C-BIM's settings do not apply …; leave out …", code, e.Error)
			}
			if got := strings.Split(list, ", "); !slices.Equal(got, tc.want) {
				t.Errorf("the message names %q, want %q (%s)", got, tc.want, e.Error)
			}
		})
	}
	var jobs []shared.Job
	ts.call("GET", "/api/jobs", nil, &jobs)
	if len(jobs) != 4 {
		t.Errorf("%d jobs after refused requests, want the fixture's 4", len(jobs))
	}

	ctx := context.Background()
	tau := 0.5
	dropout := 0.0
	for name, a := range map[string]shared.ExtractArgs{
		"natural with the settings it uses": {Natural: true, Tau: &tau, TauSurr: 0.5, Candidates: 10, Batch: 10, Seed: 3, Start: "test"},
		"C-BIM with every setting":          {Eps: 0.1, Alpha: 0.02, Steps: 5, Dropout: &dropout, Loss: "ce", BestIterate: true, Shift: 1, Noise: 0.1, Tau: &tau},
		"C-BIM with the defaults":           {},
	} {
		a.Source, a.Surrogates, a.References = f.source.ID, []string{f.surrogate.ID}, []string{f.reference.ID}
		if err := ts.check(ctx, &shared.JobRequest{Kind: shared.JobExtract, Extract: &a}); err != nil {
			t.Errorf("%s: %v, want it accepted", name, err)
		}
	}
}

// A negative alpha or steps would be taken for "unset" and replaced by the
// default: the request is refused instead.
func TestExtractRefusesNegativeAlphaSteps(t *testing.T) {
	f, dir := copyFixture(t)
	ts := start(t, Config{Dir: dir})
	models := `"source":"` + f.source.ID + `","surrogates":["` + f.surrogate.ID + `"],"references":["` + f.reference.ID + `"]`
	for _, fields := range []string{`"alpha":-0.01`, `"steps":-1`} {
		body := `{"kind":"extract","extract":{` + models + `,` + fields + `}}`
		req, _ := http.NewRequest("POST", ts.http.URL+"/api/jobs", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		var e shared.APIError
		if code := ts.do(req, &e); code != http.StatusBadRequest || !strings.Contains(e.Error, "want a step size and a step count of 0") {
			t.Errorf("%s: %d %q; want 400 refusing it", fields, code, e.Error)
		}
	}
}
