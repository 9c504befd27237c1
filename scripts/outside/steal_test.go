package outside

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/conferral/conferral/backend/data"
	"github.com/conferral/conferral/backend/onnx"
	"github.com/conferral/conferral/backend/train"
)

type manifest struct {
	AdversaryExamples int `json:"adversary_examples"`
	TestExamples      int `json:"test_examples"`
	Models            []struct {
		File         string   `json:"file"`
		Role         string   `json:"role"`
		Arch         string   `json:"arch"`
		Recipe       string   `json:"recipe"`
		Examples     int      `json:"examples"`
		TestAccuracy float64  `json:"test_accuracy"`
		Agreement    *float64 `json:"agreement"`
	} `json:"models"`
}

// steal.py trains one model of each of its architectures (ground truth,
// tiny), and every ONNX file it exports loads in Conferral's importer and
// answers as PyTorch did: the same test accuracy on the same images. Its
// manifest's recipes are Conferral's compact form, read by ParseRecipe to
// the same string. Needs python3-torch (scripts/deps.sh python3-torch).
func TestStealExportsImport(t *testing.T) {
	if err := exec.Command(python, "-c", "import torch, onnx").Run(); err != nil {
		t.Fatalf("%s cannot import torch and onnx (make deps installs python3-torch and python3-onnx): %v", python, err)
	}
	test, err := data.FashionMNIST("", false)
	if err != nil {
		t.Fatalf("Fashion-MNIST is not installed (make deps): %v", err)
	}
	const n = 300
	test = test.First(n)
	dir := t.TempDir()
	args := []string{"steal.py", "--out", dir, "--limit", "300", "--epochs", "1", "--threads", "1"}
	recipes := map[string]string{
		"tnet": "adam,bs=32,aug=none", "tlenet": "sgd,lr=0.05,bs=32,aug=noise,ls=0.1",
		"tbnnet": "adamw,bs=32,aug=crop+flip,share=0.5", "tmlp": "sgd+nesterov,lr=0.05,bs=32,sched=step,dropout=0.3",
	}
	for arch, r := range recipes {
		args = append(args, "--model", "independent:"+arch+":"+r)
	}
	if out, err := exec.Command(python, args...).CombinedOutput(); err != nil {
		t.Fatalf("steal.py: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var mf manifest
	if err := json.Unmarshal(b, &mf); err != nil {
		t.Fatal(err)
	}
	if len(mf.Models) != len(recipes) || mf.AdversaryExamples != 300 || mf.TestExamples != n {
		t.Fatalf("manifest: %s", b)
	}
	for _, e := range mf.Models {
		r, err := train.ParseRecipe(e.Recipe)
		if err != nil || r.String() != e.Recipe {
			t.Errorf("%s: recipe %q reads as %s, %v", e.File, e.Recipe, r, err)
		}
		if e.Role != "independent" || e.Agreement != nil || e.Examples != int(math.Round(r.Share*300)) {
			t.Errorf("%s: role %s, agreement %v, %d examples for share %v", e.File, e.Role, e.Agreement, e.Examples, r.Share)
		}
		m, err := onnx.Open(filepath.Join(dir, e.File), onnx.Options{})
		if err != nil {
			t.Errorf("%s: Conferral's importer: %v", e.File, err)
			continue
		}
		acc, err := train.Accuracy(context.Background(), m, test, nil)
		m.Free()
		if err != nil {
			t.Fatal(err)
		}
		// One image either way: float32 ties between two logits.
		if math.Abs(acc-e.TestAccuracy) > 1.5/n {
			t.Errorf("%s (%s): Conferral measures test accuracy %.4f, PyTorch %.4f", e.File, e.Arch, acc, e.TestAccuracy)
		}
		t.Logf("%s: %s, test accuracy %.4f (PyTorch %.4f)", e.File, e.Recipe, acc, e.TestAccuracy)
	}
}
