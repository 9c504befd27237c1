package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/conferral/conferral/backend/data"
	"github.com/conferral/conferral/backend/fingerprint"
	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/suspect"
	"github.com/conferral/conferral/backend/torch"
)

// TestCalibrateVerifyBenchmark runs the calibrated path end to end on the
// CLI: tiny models, a fingerprint keyed by one of them, `calibrate` with
// the others, then `verify` (full and sequential) and `experiment
// benchmark`, each reading the calibration beside the fingerprint.
func TestCalibrateVerifyBenchmark(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	small := []string{"--threads", "1", "--quiet", "--device", "cpu"}
	var models []string
	for i := range 5 {
		m := filepath.Join(dir, fmt.Sprintf("m%d.safetensors", i))
		if code, _, stderr := invoke(t, ctx, append([]string{"train", "--arch", "mlp", "--epochs", "1", "--limit", "300", "--seed", fmt.Sprint(i + 1), "--out", m}, small...)...); code != 0 {
			t.Fatalf("train: exit %d: %s", code, stderr)
		}
		models = append(models, m)
	}
	// The fingerprint: 60 test images keyed by model 0's labels, so model
	// 0 is "derived" and the others agree only as far as they agree with it.
	test, err := data.FashionMNIST("", false)
	if err != nil {
		t.Fatal(err)
	}
	idx := make([]int, 60)
	for i := range idx {
		idx[i] = i
	}
	d := test.Subset(idx)
	m0, _, err := nn.Load(models[0], torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := (&suspect.Local{Model: m0, Name: "m0"}).Classify(ctx, suspect.Images{X: d.Float32(idx), N: d.N, C: d.C, H: d.H, W: d.W})
	m0.Free()
	if err != nil {
		t.Fatal(err)
	}
	fp := &fingerprint.Fingerprint{Images: d.Images, Originals: d.Images, N: d.N, C: d.C, H: d.H, W: d.W,
		Keys: keys, Labels: d.Labels, Confer: make([]float64, d.N), Meta: fingerprint.Meta{Dataset: d.Name, Classes: d.Classes}}
	fpPath := filepath.Join(dir, "fp.safetensors")
	if err := fp.Save(fpPath); err != nil {
		t.Fatal(err)
	}

	// The defender signs the fingerprint's commitment; verify holds it to
	// the published commitment and key.
	keyPath := filepath.Join(dir, "defender.key")
	if code, _, stderr := invoke(t, ctx, "keygen", "--out", keyPath); code != 0 {
		t.Fatalf("keygen: exit %d: %s", code, stderr)
	}
	key, err := fingerprint.ReadKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := fp.Sign(key); err != nil {
		t.Fatal(err)
	}
	if err := fp.Save(fpPath); err != nil {
		t.Fatal(err)
	}
	com, _ := fp.Commitment()
	for _, tc := range []struct {
		name string
		args []string
		code int
		says string
	}{
		{"the published commitment and key", []string{"--expect-commitment", com, "--pubkey", keyPath + ".pub"}, 0, "signed by " + fp.Signer},
		{"another commitment", []string{"--expect-commitment", strings.Repeat("0", 64)}, 1, "not the expected"},
		{"another key", []string{"--pubkey", strings.Repeat("ab", 32)}, 1, "not by the expected key"},
		{"a malformed key", []string{"--pubkey", "xyz"}, 2, "--pubkey"},
		{"sequential settings without --sequential", []string{"--batch", "4"}, 2, "ask for sequential"},
		{"a β out of range", []string{"--sequential", "--miss", "0.7"}, 2, "miss 0.7"},
	} {
		code, stdout, stderr := invoke(t, ctx, append(append([]string{"verify", "--fingerprint", fpPath, "--suspect", models[0]}, small...), tc.args...)...)
		if code != tc.code || !strings.Contains(stdout+stderr, tc.says) {
			t.Errorf("%s: exit %d (want %d), output lacks %q:\n%s%s", tc.name, code, tc.code, tc.says, stdout, stderr)
		}
	}

	code, stdout, stderr := invoke(t, ctx, append([]string{"calibrate", "--fingerprint", fpPath, "--models", strings.Join(models[1:4], ","), "--json"}, small...)...)
	if code != 0 {
		t.Fatalf("calibrate: exit %d: %s", code, stderr)
	}
	var cal calibrateResult
	if err := json.Unmarshal([]byte(stdout), &cal); err != nil {
		t.Fatal(err)
	}
	if cal.Calibration != fingerprint.CalibrationPath(fpPath) || len(cal.Models) != 3 || cal.Models[0].Arch != "mlp" || len(cal.Warnings) != 1 || cal.FPR != 0.01 ||
		cal.Test != fingerprint.TestFit { // three models cannot reach 1 % empirically
		t.Errorf("calibration %+v", cal)
	}
	// The keys that are not the true class (model 0's mistakes) give the
	// evasion check its terms: the models' true-class share, a random
	// wrapper's 1/9, and the floor halfway between.
	if ev := cal.Evasion; ev == nil || ev.Random != 1.0/9 || ev.Floor != (ev.Random+ev.Mean)/2 || !(ev.Mean > ev.Random) {
		t.Errorf("calibration's evasion check: %+v", cal.Evasion)
	}
	// The same model twice is refused, and nothing is written.
	other := filepath.Join(dir, "dup.json")
	if code, _, _ := invoke(t, ctx, append([]string{"calibrate", "--fingerprint", fpPath, "--models", models[1] + "," + models[1], "--out", other}, small...)...); code == 0 {
		t.Error("a model counted twice was accepted")
	}
	if _, err := os.Stat(other); err == nil {
		t.Error("a refused calibration was written")
	}

	verify := func(args ...string) verifyResult {
		t.Helper()
		code, stdout, stderr := invoke(t, ctx, append(append([]string{"verify", "--fingerprint", fpPath, "--json"}, small...), args...)...)
		if code != 0 {
			t.Fatalf("verify %v: exit %d: %s", args, code, stderr)
		}
		var r verifyResult
		if err := json.Unmarshal([]byte(stdout), &r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	full := verify("--suspect", models[0]+","+models[4])
	if full.Calibration != cal.Calibration || len(full.Verdicts) != 2 || full.Rule == "" {
		t.Fatalf("verify: %+v", full)
	}
	derived := full.Verdicts[0]
	if !derived.Calibrated || derived.PValue == nil || derived.Accuracy != 1 || derived.Outcome != fingerprint.Derived || derived.Null.Models != 3 || derived.Signer != fp.Signer || full.Signer != fp.Signer {
		t.Errorf("the keyed model: %+v", derived)
	}
	if ev := derived.Evasion; ev == nil || ev.Wrong != 0 || ev.Evasive {
		t.Errorf("the keyed model's evasion check: %+v, want made, nothing wrong, not evasive", derived.Evasion)
	}
	seq := verify("--suspect", models[0], "--sequential", "--batch", "4")
	if v := seq.Verdicts[0]; v.Sequential == nil || v.Outcome != fingerprint.Derived || v.Fingerprints >= fp.N || seq.Rule == full.Rule {
		t.Errorf("sequential verify: %+v (%+v)", v, v.Sequential)
	}

	out := filepath.Join(dir, "bench")
	manifest := filepath.Join(dir, "suspects.tsv")
	if err := os.WriteFile(manifest, []byte("derived\tmlp\tseed1: adam,lr=0.001\t"+models[0]+"\nindependent\tmlp\t\t"+models[4]+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = invoke(t, ctx, append([]string{"experiment", "benchmark", "--fingerprint", fpPath, "--describe", "test scale", "--out", out,
		"--suspects", manifest}, small...)...)
	if code != 0 {
		t.Fatalf("benchmark: exit %d: %s", code, stderr)
	}
	md, err := os.ReadFile(filepath.Join(out, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{full.Rule, "test scale", "seed1", "False-positive rate", "3 independent models"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("benchmark report lacks %q:\n%s", want, md)
		}
	}
	// Without derived or without independent suspects there is no error
	// rate to report: a usage error before any suspect is asked, and no
	// report written.
	for name, extra := range map[string][]string{
		"none":             {"--suspects", filepath.Join(dir, "empty.tsv")},
		"only independent": {"--independent", models[4]},
		"only derived":     {"--derived", models[0]},
	} {
		if err := os.WriteFile(filepath.Join(dir, "empty.tsv"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		empty := filepath.Join(dir, "empty-report-"+strings.ReplaceAll(name, " ", "-"))
		code, _, stderr := invoke(t, ctx, append(append([]string{"experiment", "benchmark", "--fingerprint", fpPath, "--describe", "test scale", "--out", empty}, extra...), small...)...)
		if code != 2 || !strings.Contains(stderr, "needs derived and independent suspects") {
			t.Errorf("%s: exit %d, stderr %q; want a usage error naming both kinds", name, code, stderr)
		}
		if _, err := os.Stat(empty); err == nil {
			t.Errorf("%s: a report folder was written", name)
		}
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"--describe":               "--describe",
		"a,b/c.safetensors":        "a,b/c.safetensors",
		"Fashion-MNIST; 2 epochs":  "'Fashion-MNIST; 2 epochs'",
		"it's":                     `'it'\''s'`,
		"":                         "''",
		"http://127.0.0.1:8500/v2": "http://127.0.0.1:8500/v2",
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}
