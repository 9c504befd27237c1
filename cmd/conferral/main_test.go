package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/conferral/conferral/backend/data"
	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/torch"
	"github.com/conferral/conferral/backend/train"
)

// invoke runs the CLI in-process and returns its exit code and output.
func invoke(t *testing.T, ctx context.Context, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(ctx, args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// TestUsage checks help, unknown commands and missing required flags.
func TestUsage(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name       string
		args       []string
		code       int
		stdout     []string // substrings of stdout
		stderr     []string // substrings of stderr
		noStdout   bool
		noStderror bool
	}{
		{name: "no arguments", args: nil, code: 0, stdout: []string{"usage: conferral", "train", "eval"}, noStderror: true},
		{name: "help", args: []string{"help"}, code: 0, stdout: []string{"usage: conferral", "train", "eval", "info"}, noStderror: true},
		{name: "-h", args: []string{"-h"}, code: 0, stdout: []string{"usage: conferral"}, noStderror: true},
		{name: "--help", args: []string{"--help"}, code: 0, stdout: []string{"usage: conferral"}, noStderror: true},
		{name: "unknown command", args: []string{"frobnicate"}, code: 2, stderr: []string{`unknown command "frobnicate"`, "usage: conferral"}, noStdout: true},
		{name: "train without --out", args: []string{"train", "--arch", "mlp"}, code: 2, stderr: []string{"conferral train", "--out is required"}, noStdout: true},
		{name: "eval without --model", args: []string{"eval"}, code: 2, stderr: []string{"conferral eval", "--model is required"}, noStdout: true},
		{name: "unknown start points", args: []string{"extract", "--source", "s", "--surrogates", "a", "--references", "b", "--out", "fp", "--start", "validation"}, code: 2, stderr: []string{`--start "validation": want test or train`}, noStdout: true},
		{name: "study with unknown start points", args: []string{"experiment", "fingerprint", "--models", "nowhere", "--start", "held-out"}, code: 2, stderr: []string{`--start "held-out": want test or train`}, noStdout: true},
		{name: "tau_S above 1", args: []string{"extract", "--source", "s", "--surrogates", "a", "--references", "b", "--out", "fp", "--tau-surr", "1.5"}, code: 2, stderr: []string{`"1.5" is not a number in [0,1]`}, noStdout: true},
		{name: "tau not a number", args: []string{"extract", "--source", "s", "--surrogates", "a", "--references", "b", "--out", "fp", "--tau", "NaN"}, code: 2, stderr: []string{`"NaN" is not a number in [0,1]`}, noStdout: true},
		{name: "study with tau_S sweep above 1", args: []string{"experiment", "fingerprint", "--models", "nowhere", "--tau-surrs", "0,2"}, code: 2, stderr: []string{"--taus and --tau-surrs take values in [0,1], not 2"}, noStdout: true},
		{name: "unknown C-BIM loss", args: []string{"experiment", "fingerprint", "--models", "nowhere", "--loss", "hinge"}, code: 2, stderr: []string{`loss "hinge": want one of [linear ce geometric]`}, noStdout: true},
		{name: "full strength of another study", args: []string{"experiment", "fingerprint", "--models", "nowhere", "--full"}, code: 2, stderr: []string{"--full: only the robustness study takes it"}, noStdout: true},
		{name: "source of another study", args: []string{"experiment", "conferrability", "--models", "nowhere", "--source", "m.safetensors"}, code: 2, stderr: []string{"--source: only the robustness study takes it"}, noStdout: true},
		{name: "unknown surrogate labels", args: []string{"experiment", "fingerprint", "--models", "nowhere", "--surrogate-labels", "fuzzy"}, code: 2, stderr: []string{`--surrogate-labels "fuzzy": want soft or hard`}, noStdout: true},
		{name: "study with no models per architecture", args: []string{"experiment", "robustness", "--models", "nowhere", "--per", "0"}, code: 2, stderr: []string{"--per 0, --epochs 2, --points 200: want 1 or more"}, noStdout: true},
		{name: "study with focus above 1", args: []string{"experiment", "conferrability", "--models", "nowhere", "--focus", "2"}, code: 2, stderr: []string{"--focus 2: want an ε in (0,1]"}, noStdout: true},
		{name: "study sweep not a number", args: []string{"experiment", "robustness", "--models", "nowhere", "--lambdas", "0.1,x"}, code: 2, stderr: []string{`--lambdas: "x" is not a number`}, noStdout: true},
		{name: "sequential settings without sequential", args: []string{"verify", "--fingerprint", "nowhere.json", "--suspect", "m", "--miss", "0.1"}, code: 2, stderr: []string{"ask for sequential too"}, noStdout: true},
		{name: "study with eps sweep above 1", args: []string{"experiment", "conferrability", "--models", "nowhere", "--eps-sweep", "0.1,2"}, code: 2, stderr: []string{"--eps-sweep takes values in (0,1], not 2"}, noStdout: true},
		{name: "bad device", args: []string{"info", "--device", "tpu"}, code: 1, stderr: []string{"conferral info", "tpu"}, noStdout: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := invoke(t, ctx, tc.args...)
			if code != tc.code {
				t.Errorf("exit code %d, want %d (stderr %q)", code, tc.code, stderr)
			}
			for _, s := range tc.stdout {
				if !strings.Contains(stdout, s) {
					t.Errorf("stdout lacks %q:\n%s", s, stdout)
				}
			}
			for _, s := range tc.stderr {
				if !strings.Contains(stderr, s) {
					t.Errorf("stderr lacks %q:\n%s", s, stderr)
				}
			}
			if tc.noStdout && stdout != "" {
				t.Errorf("unexpected stdout %q", stdout)
			}
			if tc.noStderror && stderr != "" {
				t.Errorf("unexpected stderr %q", stderr)
			}
		})
	}

	t.Run("help lists every command", func(t *testing.T) {
		_, stdout, _ := invoke(t, ctx, "help")
		for name, c := range commands() {
			if !strings.Contains(stdout, "  "+name+" ") || !strings.Contains(stdout, c.summary) {
				t.Errorf("help lacks %s (%s):\n%s", name, c.summary, stdout)
			}
		}
	})
}

func TestInfo(t *testing.T) {
	code, stdout, stderr := invoke(t, context.Background(), "info", "--json", "--device", "cpu")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var info struct {
		Device        string   `json:"device"`
		Threads       int      `json:"threads"`
		Architectures []string `json:"architectures"`
	}
	if err := json.Unmarshal([]byte(stdout), &info); err != nil {
		t.Fatalf("%v in %q", err, stdout)
	}
	if info.Device != "cpu" || info.Threads < 1 || strings.Join(info.Architectures, ",") != strings.Join(nn.Architectures(), ",") {
		t.Errorf("info %+v", info)
	}
}

// TestTrainEval trains a small model, evaluates it, trains a surrogate of
// it, and checks what each command reports against the files written.
func TestTrainEval(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	model := filepath.Join(dir, "source.safetensors")

	code, stdout, stderr := invoke(t, ctx, "train", "--arch", "mlp", "--epochs", "1", "--limit", "1000", "--optimizer", "adam", "--lr", "0.001", "--batch", "32", "--no-augment", "--out", model, "--json", "--quiet", "--device", "cpu")
	if code != 0 {
		t.Fatalf("train: exit %d: %s", code, stderr)
	}
	if stderr != "" {
		t.Errorf("train --quiet wrote to stderr: %q", stderr)
	}
	var tr trainResult
	if err := json.Unmarshal([]byte(stdout), &tr); err != nil {
		t.Fatalf("train --json: %v in %q", err, stdout)
	}
	t.Logf("source: test accuracy %.3f", tr.TestAccuracy)
	if tr.TestAccuracy < 0.5 {
		t.Errorf("test accuracy %.3f after one epoch on 1,000 images, want > 0.5", tr.TestAccuracy)
	}
	sum, err := fileSHA256(model)
	if err != nil {
		t.Fatal(err)
	}
	if tr.SHA256 != sum || len(sum) != 64 {
		t.Errorf("reported sha256 %q, file's %q", tr.SHA256, sum)
	}
	if tr.Model != model || tr.Arch != "mlp" || tr.Dataset != "fashion-mnist" || tr.Split != "defender" || tr.Teacher != "" || tr.Params <= 0 || len(tr.Epochs) != 1 {
		t.Errorf("train result %+v", tr)
	}
	m, meta, err := nn.Load(model, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	if m.NumParams() != tr.Params {
		t.Errorf("file has %d parameters, train reported %d", m.NumParams(), tr.Params)
	}
	m.Free()
	for k, want := range map[string]string{"train.split": "defender", "train.epochs": "1", "train.optimizer": "adam", "train.seed": "1"} {
		if meta[k] != want {
			t.Errorf("metadata %s = %q, want %q", k, meta[k], want)
		}
	}
	if meta["train.teacher_sha256"] != "" {
		t.Errorf("a model trained on ground truth has a teacher: %v", meta)
	}

	t.Run("eval", func(t *testing.T) {
		for _, n := range []int{500, 1000} {
			code, stdout, stderr := invoke(t, ctx, "eval", "--model", model, "--limit", strconv.Itoa(n), "--json", "--quiet", "--device", "cpu")
			if code != 0 {
				t.Fatalf("eval: exit %d: %s", code, stderr)
			}
			var er evalResult
			if err := json.Unmarshal([]byte(stdout), &er); err != nil {
				t.Fatalf("eval --json: %v in %q", err, stdout)
			}
			if er.Examples != n || er.Dataset != "fashion-mnist" || er.Model != model {
				t.Errorf("eval result %+v", er)
			}
			if len(er.Confusion) != 10 {
				t.Fatalf("confusion matrix has %d rows, want 10", len(er.Confusion))
			}
			total, diag := 0, 0
			for i, row := range er.Confusion {
				if len(row) != 10 {
					t.Fatalf("confusion row %d has %d columns", i, len(row))
				}
				for j, v := range row {
					total += v
					if i == j {
						diag += v
					}
				}
			}
			if total != n {
				t.Errorf("confusion matrix counts %d examples, want %d", total, n)
			}
			if er.Accuracy != float64(diag)/float64(n) {
				t.Errorf("accuracy %v, confusion diagonal says %v", er.Accuracy, float64(diag)/float64(n))
			}
			if len(er.PerClass) == 0 || len(er.PerClass) > 10 {
				t.Errorf("per-class accuracy %v", er.PerClass)
			}
			for c, a := range er.PerClass {
				if a < 0 || a > 1 {
					t.Errorf("class %s accuracy %v", c, a)
				}
			}
			// train's --limit 1000 evaluated on the same first 1,000 test images.
			if n == 1000 && er.Accuracy != tr.TestAccuracy {
				t.Errorf("eval accuracy %v on 1,000 test images, train reported %v", er.Accuracy, tr.TestAccuracy)
			}
		}
		code, stdout, _ := invoke(t, ctx, "eval", "--model", model, "--limit", "200", "--quiet")
		if code != 0 || !strings.Contains(stdout, "accuracy") || !strings.Contains(stdout, "200 examples") || !strings.Contains(stdout, "T-shirt") {
			t.Errorf("eval text output (exit %d):\n%s", code, stdout)
		}
	})

	t.Run("surrogate", func(t *testing.T) {
		surr := filepath.Join(dir, "surrogate.safetensors")
		code, stdout, stderr := invoke(t, ctx, "train", "--teacher", model, "--split", "adversary", "--arch", "mlp", "--epochs", "1", "--limit", "1000",
			"--optimizer", "adam", "--lr", "0.001", "--batch", "32", "--no-augment", "--out", surr, "--json", "--quiet", "--device", "cpu")
		if code != 0 {
			t.Fatalf("train --teacher: exit %d: %s", code, stderr)
		}
		var sr trainResult
		if err := json.Unmarshal([]byte(stdout), &sr); err != nil {
			t.Fatalf("%v in %q", err, stdout)
		}
		t.Logf("surrogate: test accuracy %.3f", sr.TestAccuracy)
		if sr.Teacher != model || sr.Split != "adversary" || sr.TestAccuracy < 0.5 {
			t.Errorf("surrogate result %+v", sr)
		}
		s, meta, err := nn.Load(surr, torch.CPU)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Free()
		src, _, err := nn.Load(model, torch.CPU)
		if err != nil {
			t.Fatal(err)
		}
		defer src.Free()
		test, err := data.FashionMNIST("", false)
		if err != nil {
			t.Fatal(err)
		}
		test = test.First(500)
		want, err := train.Predict(ctx, src, test)
		if err != nil {
			t.Fatal(err)
		}
		agree, err := train.Accuracy(ctx, s, test, want)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("surrogate agrees with its teacher on %.3f of 500 test images", agree)
		if agree < 0.6 {
			t.Errorf("surrogate agrees with its teacher on %.3f of the test images, want > 0.6", agree)
		}
		if meta["train.teacher_sha256"] != sum {
			t.Errorf("train.teacher_sha256 = %q, want the teacher's %q", meta["train.teacher_sha256"], sum)
		}
		if meta["train.derivation"] != "retraining" || meta["train.split"] != "adversary" {
			t.Errorf("surrogate metadata %v", meta)
		}
		if got, _ := fileSHA256(surr); got != sr.SHA256 {
			t.Errorf("reported sha256 %q, file's %q", sr.SHA256, got)
		}
	})

	t.Run("teacher missing", func(t *testing.T) {
		missing := filepath.Join(dir, "no-such-teacher.safetensors")
		code, _, stderr := invoke(t, ctx, "train", "--teacher", missing, "--arch", "mlp", "--epochs", "1", "--limit", "100", "--out", filepath.Join(dir, "x.safetensors"), "--quiet")
		if code != 1 || !strings.Contains(stderr, missing) {
			t.Errorf("exit %d, stderr %q; want 1 naming %s", code, stderr, missing)
		}
	})
}

// TestTrainCancelled checks that a cancelled run exits 130 and says so.
func TestTrainCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	out := filepath.Join(t.TempDir(), "m.safetensors")
	code, _, stderr := invoke(t, ctx, "train", "--arch", "mlp", "--epochs", "1", "--limit", "200", "--out", out, "--quiet")
	if code != 130 || !strings.Contains(stderr, "cancelled") {
		t.Errorf("exit %d, stderr %q; want 130 and cancelled", code, stderr)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("a cancelled run left a model file: %v", err)
	}
}

// TestTrainBadFlags checks that mistakes on the command line fail with a
// message naming them.
func TestTrainBadFlags(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "m.safetensors")
	cases := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"bad split", []string{"--split", "middle", "--limit", "100"}, 2, "middle"},
		{"unknown arch", []string{"--arch", "transformer", "--limit", "100"}, 2, "transformer"},
		{"zero epochs", []string{"--arch", "mlp", "--epochs", "0", "--limit", "100"}, 2, "epochs"},
		{"unknown dataset", []string{"--data", "svhn"}, 1, "svhn"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := invoke(t, context.Background(), append([]string{"train", "--out", out, "--quiet"}, tc.args...)...)
			if code != tc.code || !strings.Contains(stderr, tc.msg) || !strings.HasPrefix(stderr, "conferral train: ") {
				t.Errorf("exit %d, stderr %q; want %d and a message naming %q", code, stderr, tc.code, tc.msg)
			}
			if stdout != "" {
				t.Errorf("stdout %q", stdout)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("a failed run left a model file: %v", err)
			}
		})
	}
}

// TestEvalBadModel checks that eval of a model file that is missing or not
// a model exits 1 naming the file.
func TestEvalBadModel(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	header := []byte(`{"__metadata__":{"x":"y"}}`)
	noSpec := append([]byte{byte(len(header)), 0, 0, 0, 0, 0, 0, 0}, header...)
	cases := []struct {
		name, path string
	}{
		{"missing", filepath.Join(dir, "missing.safetensors")},
		{"empty", write("empty.safetensors", nil)},
		{"garbage", write("garbage.safetensors", []byte("this is not a model file at all, just text\n"))},
		{"huge header length", write("huge.safetensors", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, '{', '}'})},
		{"safetensors without a spec", write("nospec.safetensors", noSpec)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := invoke(t, context.Background(), "eval", "--model", tc.path, "--quiet")
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			if !strings.Contains(stderr, tc.path) || !strings.HasPrefix(stderr, "conferral eval: ") {
				t.Errorf("stderr %q does not name %s", stderr, tc.path)
			}
			if stdout != "" {
				t.Errorf("stdout %q", stdout)
			}
		})
	}
}
