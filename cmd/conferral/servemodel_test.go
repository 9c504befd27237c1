package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/conferral/conferral/backend/data"
	"github.com/conferral/conferral/backend/fingerprint"
)

// serveModel starts `conferral serve-model` in-process on a free port and
// returns the endpoint URLs it prints (KServe, TF Serving); the server
// stops, and must exit 0, when the test ends.
func serveModel(t *testing.T, args ...string) (kserve, tfserving string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	exited := make(chan int, 1)
	var stderr strings.Builder
	go func() {
		code := run(ctx, append([]string{"serve-model", "--addr", "127.0.0.1:0", "--threads", "1", "--device", "cpu"}, args...), pw, &stderr)
		pw.Close()
		exited <- code
	}()
	sc := bufio.NewScanner(pr)
	re := regexp.MustCompile(`(KServe v2|TensorFlow Serving):\s+(http://\S+)`)
	for (kserve == "" || tfserving == "") && sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			if m[1] == "KServe v2" {
				kserve = m[2]
			} else {
				tfserving = m[2]
			}
		}
	}
	go io.Copy(io.Discard, pr)
	if kserve == "" || tfserving == "" {
		cancel()
		t.Fatalf("serve-model printed no URLs (exit %d): %s", <-exited, stderr.String())
	}
	t.Cleanup(func() {
		cancel()
		if code := <-exited; code != 0 {
			t.Errorf("serve-model exited %d: %s", code, stderr.String())
		}
	})
	return kserve, tfserving
}

// TestServeModelVerify trains a model, serves it in both protocols, and
// verifies it through each: the verdicts must be the local one exactly,
// the guard must refuse loopback unless allowed, and the budget must hold.
func TestServeModelVerify(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	model := filepath.Join(dir, "m.safetensors")
	small := []string{"--threads", "1", "--quiet", "--device", "cpu"}
	if code, _, stderr := invoke(t, ctx, append([]string{"train", "--arch", "mlp", "--epochs", "1", "--limit", "400", "--optimizer", "adam", "--lr", "0.001", "--no-augment", "--out", model}, small...)...); code != 0 {
		t.Fatalf("train: exit %d: %s", code, stderr)
	}
	// A fingerprint file of twelve test images keyed by their true labels:
	// the model agrees with some, not all.
	test, err := data.FashionMNIST("", false)
	if err != nil {
		t.Fatal(err)
	}
	d := test.Subset([]int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11})
	fp := &fingerprint.Fingerprint{Images: d.Images, Originals: d.Images, N: d.N, C: d.C, H: d.H, W: d.W,
		Keys: d.Labels, Labels: d.Labels, Confer: make([]float64, d.N),
		Meta: fingerprint.Meta{Dataset: d.Name, Classes: d.Classes, ReferenceRate: 0.1}}
	fpPath := filepath.Join(dir, "fp.safetensors")
	if err := fp.Save(fpPath); err != nil {
		t.Fatal(err)
	}
	verify := func(args ...string) (int, []*fingerprint.Verdict, string, string) {
		code, stdout, stderr := invoke(t, ctx, append(append([]string{"verify", "--fingerprint", fpPath}, small...), args...)...)
		var res struct{ Verdicts []*fingerprint.Verdict }
		if code == 0 && slices.Contains(args, "--json") {
			if err := json.Unmarshal([]byte(stdout), &res); err != nil {
				t.Fatalf("verify --json: %v in %q", err, stdout)
			}
		}
		return code, res.Verdicts, stdout, stderr
	}
	code, local, _, stderr := verify("--suspect", model, "--json")
	if code != 0 || len(local) != 1 {
		t.Fatalf("local verify: exit %d: %s", code, stderr)
	}
	if local[0].Queries != fp.N {
		t.Errorf("local verdict: %d queries for %d fingerprints", local[0].Queries, fp.N)
	}
	// An uncalibrated fingerprint gives no p-value and says what to run;
	// a single base rate is no longer a way to get one.
	if code, _, stdout, stderr := verify("--suspect", model); code != 0 || !strings.Contains(stdout, "uncalibrated") ||
		!strings.Contains(stdout, "conferral calibrate") || strings.Contains(stdout, "p =") {
		t.Errorf("uncalibrated verify: exit %d:\n%s%s", code, stdout, stderr)
	}
	if code, _, _, _ := verify("--suspect", model, "--base-rate", "0.3"); code != 2 {
		t.Errorf("--base-rate: exit %d, want a usage error", code)
	}
	kserve, tfserving := serveModel(t, "--model", model)
	kLabels, tLabels := serveModel(t, "--model", model, "--labels-only", "--layout", "nhwc", "--scale", "255", "--name", "fmnist")

	same := func(t *testing.T, v *fingerprint.Verdict, url string) {
		t.Helper()
		l := local[0]
		if v.Suspect != url || !slices.Equal(v.Labels, l.Labels) || v.Agree != l.Agree || v.Accuracy != l.Accuracy ||
			v.Surrogate != l.Surrogate || v.Outcome != l.Outcome || v.Queries != fp.N {
			t.Errorf("remote verdict %+v\nlocal verdict %+v", v, l)
		}
	}
	t.Run("both protocols and both servers", func(t *testing.T) {
		cases := [][]string{
			{"--suspect", kserve + "," + tfserving},
			{"--suspect", kLabels + "," + tLabels, "--scale", "255"},
			{"--suspect", kserve + "/infer", "--protocol", "kserve", "--layout", "nchw", "--budget", "12", "--remote-batch", "5"},
			{"--suspect", strings.Replace(tLabels, "/fmnist", "/fmnist:predict", 1), "--protocol", "tfserving", "--scale", "255", "--timeout", "20s"},
		}
		for _, args := range cases {
			code, vs, _, stderr := verify(append(args, "--allow-private", "--json")...)
			if code != 0 {
				t.Errorf("%v: exit %d: %s", args, code, stderr)
				continue
			}
			urls := strings.Split(args[1], ",")
			if len(vs) != len(urls) {
				t.Fatalf("%v: %d verdicts", args, len(vs))
			}
			for i, v := range vs {
				same(t, v, urls[i])
			}
		}
	})
	t.Run("text output says the queries", func(t *testing.T) {
		code, _, stdout, stderr := verify("--suspect", tfserving, "--allow-private", "--budget", "20")
		if code != 0 || !strings.Contains(stdout, "12 images sent to the tfserving endpoint (budget 20)") {
			t.Errorf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
		}
	})
	t.Run("onnx model", func(t *testing.T) {
		file := filepath.Join(dir, "m.onnx")
		if code, _, stderr := invoke(t, ctx, append([]string{"export", "--model", model, "--out", file}, small...)...); code != 0 {
			t.Fatalf("export: exit %d: %s", code, stderr)
		}
		code, onnxLocal, _, stderr := verify("--suspect", file, "--json")
		if code != 0 {
			t.Fatalf("verify %s: exit %d: %s", file, code, stderr)
		}
		k, tf := serveModel(t, "--model", file, "--answer", "name")
		for _, url := range []string{k, tf} {
			code, vs, _, stderr := verify("--suspect", url, "--allow-private", "--json")
			if code != 0 {
				t.Fatalf("verify %s: exit %d: %s", url, code, stderr)
			}
			if v, l := vs[0], onnxLocal[0]; !slices.Equal(v.Labels, l.Labels) || v.Agree != l.Agree || v.Queries != fp.N {
				t.Errorf("%s: remote verdict %+v, local %+v", url, v, l)
			}
		}
	})
	t.Run("refusals", func(t *testing.T) {
		cases := []struct {
			args []string
			code int
			msg  string
		}{
			{[]string{"--suspect", kserve}, 1, "loopback address"},
			{[]string{"--suspect", kserve, "--allow-private", "--budget", "11"}, 1, "query budget exhausted: 0 of 11 images sent, 12 more needed"},
			{[]string{"--suspect", kserve, "--allow-net", "127.0.0.1/32", "--budget", "11"}, 1, "query budget exhausted"},
			{[]string{"--suspect", kserve, "--allow-net", "127.0.0.0/8"}, 1, "an address of this host"},
			{[]string{"--suspect", kLabels, "--allow-private", "--layout", "nchw"}, 1, "is NHWC, not the NCHW asked for"},
			{[]string{"--suspect", "ftp://example.com/m"}, 1, "scheme"},
			{[]string{"--suspect", "http://169.254.169.254/v2/models/m"}, 1, "link-local"},
			{[]string{"--suspect", kserve, "--protocol", "grpc"}, 2, "--protocol"},
			{[]string{"--suspect", kserve, "--allow-net", "10.0.0.0/99"}, 2, "--allow-net"},
			{[]string{"--suspect", kserve, "--remote-batch", "0"}, 2, "--remote-batch"},
			{[]string{"--suspect", kserve, "--header", "no colon"}, 2, "want Name: value"},
		}
		for _, c := range cases {
			code, _, _, stderr := verify(c.args...)
			if code != c.code || !strings.Contains(stderr, c.msg) {
				t.Errorf("%v: exit %d, stderr %q; want %d and %q", c.args, code, stderr, c.code, c.msg)
			}
		}
	})
}

// TestServeModelFlags checks serve-model's usage errors.
func TestServeModelFlags(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		args []string
		code int
		msg  string
	}{
		{nil, 2, "--model is required"},
		{[]string{"--model", "x", "--answer", "logits"}, 2, "--answer"},
		{[]string{"--model", "x", "--layout", "chw"}, 2, "--layout"},
		{[]string{"--model", "x", "--labels-only", "--answer", "name"}, 2, "disagree"},
		{[]string{"--model", filepath.Join(t.TempDir(), "missing.safetensors")}, 1, "missing.safetensors"},
		{[]string{"--model", filepath.Join(t.TempDir(), "missing.onnx")}, 1, "missing.onnx"},
		{[]string{"--model", "m.safetensors", "--classes", "a,b"}, 2, "--classes is for .onnx models"},
	}
	for _, c := range cases {
		code, _, stderr := invoke(t, ctx, append([]string{"serve-model", "--threads", "1"}, c.args...)...)
		if code != c.code || !strings.Contains(stderr, c.msg) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", c.args, code, stderr, c.code, c.msg)
		}
	}
}
