package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/conferral/conferral/backend/nn"
	"github.com/conferral/conferral/backend/torch"
)

// TestExportCommand writes a model with Save, exports it with the CLI and
// has Debian's python3-onnx check the file; bad invocations fail with a
// message and no file.
func TestExportCommand(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	spec := nn.Spec{Arch: "lenet", Dataset: "fashion-mnist", Classes: strings.Split("0123456789", ""),
		C: 1, H: 28, W: 28, Mean: []float64{0.286}, Std: []float64{0.353}}
	m, err := nn.New(spec, 3, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	model := filepath.Join(dir, "m.safetensors")
	err = m.Save(model, nil)
	m.Free()
	if err != nil {
		t.Fatal(err)
	}

	out := filepath.Join(dir, "m.onnx")
	code, stdout, stderr := invoke(t, ctx, "export", "--model", model, "--out", out, "--opset", "13", "--threads", "1", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var r exportResult
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		t.Fatalf("%v in %q", err, stdout)
	}
	st, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if r.Arch != "lenet" || r.Opset != 13 || r.Bytes != st.Size() || len(r.SHA256) != 64 {
		t.Errorf("result %+v for a file of %d bytes", r, st.Size())
	}
	check := `import onnx, sys
m = onnx.load(sys.argv[1]); onnx.checker.check_model(m, full_check=True)
meta = {p.key: p.value for p in m.metadata_props}
print(m.opset_import[0].version, meta["conferral.layout"], meta["conferral.mean"], meta["conferral.std"], meta["conferral.arch"])`
	b, err := exec.Command("/usr/bin/python3", "-c", check, out).CombinedOutput()
	if err != nil {
		t.Fatalf("onnx.checker rejects the export (python3-onnx is a dependency: make deps): %v\n%s", err, b)
	}
	if got := strings.TrimSpace(string(b)); got != "13 nchw 0 1 lenet" {
		t.Errorf("python reads %q, want opset 13, nchw, mean 0, std 1, lenet", got)
	}

	cases := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"no model", []string{"--out", filepath.Join(dir, "a.onnx")}, 2, "--model is required"},
		{"no out", []string{"--model", model}, 2, "--out is required"},
		{"bad opset", []string{"--model", model, "--out", filepath.Join(dir, "b.onnx"), "--opset", "8"}, 2, "--opset 8"},
		{"missing model", []string{"--model", filepath.Join(dir, "none.safetensors"), "--out", filepath.Join(dir, "c.onnx")}, 1, "none.safetensors"},
		{"not a model", []string{"--model", out, "--out", filepath.Join(dir, "d.onnx")}, 1, "conferral export"},
		{"unwritable out", []string{"--model", model, "--out", filepath.Join(dir, "no", "e.onnx")}, 1, "no such file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, stdout, stderr := invoke(t, ctx, append([]string{"export", "--threads", "1"}, c.args...)...)
			if code != c.code || !strings.Contains(stderr, c.stderr) || stdout != "" {
				t.Errorf("exit %d, stderr %q, stdout %q; want exit %d and %q", code, stderr, stdout, c.code, c.stderr)
			}
		})
	}
	for _, f := range []string{"a", "b", "c", "d"} {
		if _, err := os.Stat(filepath.Join(dir, f+".onnx")); !os.IsNotExist(err) {
			t.Errorf("a failed export wrote %s.onnx", f)
		}
	}
}
