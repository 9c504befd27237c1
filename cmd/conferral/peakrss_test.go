package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/conferral/conferral/internal/onnxtest"
)

// hwmEnv asks a CLI child to report its peak resident memory as it exits.
const hwmEnv = "CONFERRAL_TEST_REPORT_HWM"

// reportHWM writes this process's peak resident set size (VmHWM of
// /proc/self/status, which belongs to the process image since its exec)
// as a last line "VmHWM: N kB". getrusage's ru_maxrss cannot tell: a child
// that os/exec starts inherits the parent's mark at exec.
func reportHWM(w io.Writer) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		fmt.Fprintf(w, "VmHWM: unknown (%v)\n", err)
		return
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			fmt.Fprintln(w, line)
		}
	}
}

// childRun is one run of the conferral CLI in a child process.
type childRun struct {
	code   int
	output string
	peak   int64 // the child's peak resident set size, bytes
}

// runChild runs the CLI (this test binary, as TestMain makes it) with args
// in a child process and reads its peak resident set size, which the child
// reports as it exits (reportHWM). serve, when not nil, is
// given the URL the child prints (a serve-model) and then the child is
// stopped as Ctrl-C stops it.
func runChild(t *testing.T, args []string, serve func(url string)) childRun {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), childEnv+"=1", hwmEnv+"=1")
	var out syncBuffer
	cmd.Stderr = &out
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	defer func() {
		select {
		case <-done:
		default:
			cmd.Process.Kill()
		}
	}()
	lines := bufio.NewScanner(stdout)
	if serve != nil {
		re := regexp.MustCompile(`KServe v2:\s+(http://\S+)/v2/models/`)
		url := ""
		for url == "" && lines.Scan() {
			out.Write([]byte(lines.Text() + "\n"))
			if m := re.FindStringSubmatch(lines.Text()); m != nil {
				url = m[1]
			}
		}
		if url == "" {
			cmd.Wait()
			t.Fatalf("%v printed no URL: %s", args, out.String())
		}
		serve(url)
		cmd.Process.Signal(syscall.SIGTERM)
	}
	for lines.Scan() {
		out.Write([]byte(lines.Text() + "\n"))
	}
	cmd.Wait()
	close(done)
	m := regexp.MustCompile(`(?m)^VmHWM:\s+(\d+) kB$`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("%v reported no peak memory: %s", args, out.String())
	}
	kb, _ := strconv.ParseInt(m[1], 10, 64)
	return childRun{code: cmd.ProcessState.ExitCode(), output: out.String(), peak: kb << 10}
}

// paddedAnswer writes a KServe v2 answer of three labels padded to size
// bytes, in chunks: what the hostile endpoint sent.
func paddedAnswer(w http.ResponseWriter, size int) {
	io.WriteString(w, `{"outputs":[{"name":"p","shape":[3],"datatype":"INT64","data":[0,1,2]}],"pad":"`)
	chunk := strings.Repeat("x", 1<<16)
	for left := size; left > 0; left -= len(chunk) {
		if _, err := io.WriteString(w, chunk[:min(left, len(chunk))]); err != nil {
			return // the client stopped reading
		}
	}
	io.WriteString(w, `"}`)
}

// TestPeakRSSUnderAttack runs each memory bomb of issue 15 against a real
// conferral process and measures the process's peak resident memory: an
// ONNX graph whose Expand grows each image to 1.2 GB (it used to take
// that), a 60 MB answer from a remote suspect (it used to take 4 GB), and
// three 48 MB JSON bodies at once to serve-model (they used to take
// 5.5 GB) alongside a 22 MB one of 1,024 images that it answers. Each must stay within attackMargin of the same command's
// benign run, which is measured alongside. (The upload attack is measured
// in backend/server, whose fixture has a fingerprint to upload against.)
func TestPeakRSSUnderAttack(t *testing.T) {
	const attackMargin = 200 << 20
	dir := t.TempDir()
	fpPath, bomb := bombFixture(t, dir, 200_000) // 1.2 GiB per image by the estimate
	small := filepath.Join(dir, "small.onnx")    // the same graph, one row: a linear model
	if err := os.WriteFile(small, onnxtest.ExpandBomb(1, 28, 28, 1, 10), 0o644); err != nil {
		t.Fatal(err)
	}
	flags := []string{"--threads", "1", "--device", "cpu", "--quiet"}

	endpoint := func(answer int) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			if !strings.HasSuffix(r.URL.Path, "/infer") {
				io.WriteString(w, `{"name":"m","inputs":[{"name":"x","datatype":"FP32","shape":[-1,1,28,28]}],"outputs":[{"name":"p","datatype":"INT64","shape":[-1]}]}`)
				return
			}
			if answer > 0 {
				paddedAnswer(w, answer)
				return
			}
			var req struct {
				Inputs []struct{ Shape []int } `json:"inputs"`
			}
			n := 1
			if err := jsonDecode(r.Body, &req); err == nil && len(req.Inputs) > 0 && len(req.Inputs[0].Shape) > 0 {
				n = req.Inputs[0].Shape[0]
			}
			labels := strings.TrimSuffix(strings.Repeat("3,", n), ",")
			fmt.Fprintf(w, `{"outputs":[{"name":"p","shape":[%d],"datatype":"INT64","data":[%s]}]}`, n, labels)
		}))
		t.Cleanup(srv.Close)
		return srv.URL + "/v2/models/m"
	}
	remote := []string{"--protocol", "kserve", "--layout", "nchw", "--input", "x", "--retries", "0", "--allow-private"}

	// Bodies for serve-model: one image declared, 48 MB of values sent
	// (KServe), and 48 MB of TF Serving instances (over the batch limit).
	values := func(size int) string {
		v := strings.Repeat("0.123456,", size/9)
		return strings.TrimSuffix(v, ",")
	}
	kserveBomb := `{"inputs":[{"name":"input","shape":[1,1,28,28],"datatype":"FP32","data":[` + values(48<<20) + `]}]}`
	row := "[" + strings.TrimSuffix(strings.Repeat("["+values(28*9)+"],", 28), ",") + "]"
	img := "[" + row + "],"
	tfBomb := `{"instances":[` + strings.TrimSuffix(strings.Repeat(img, (48<<20)/len(img)), ",") + `]}`
	post := func(url, body string) (int, string) {
		resp, err := http.Post(url, "application/json", strings.NewReader(body))
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		return resp.StatusCode, string(b)
	}
	serveBenign := func(url string) {
		one := `{"inputs":[{"name":"input","shape":[1,1,28,28],"datatype":"FP32","data":[` + values(784*9) + `]}]}`
		if code, body := post(url+"/v2/models/model/infer", one); code != http.StatusOK {
			t.Errorf("a benign request: %d %s", code, body)
		}
	}
	// Under the body bound: the most images a request may carry (1,024),
	// each value written with 25 digits, 22 MB; it is answered.
	long := strings.TrimSuffix(strings.Repeat("0.1234567890123456789012345,", 1024*784), ",")
	kserveFull := `{"inputs":[{"name":"input","shape":[1024,1,28,28],"datatype":"FP32","data":[` + long + `]}]}`
	serveBombs := func(url string) {
		var wg sync.WaitGroup
		for i, b := range []struct {
			path, body string
			status     int
		}{
			{"/v2/models/model/infer", kserveBomb, http.StatusRequestEntityTooLarge},
			{"/v1/models/model:predict", tfBomb, http.StatusRequestEntityTooLarge},
			{"/v2/models/model/infer", kserveBomb, http.StatusRequestEntityTooLarge},
			{"/v2/models/model/infer", kserveFull, http.StatusOK},
		} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				code, body := post(url+b.path, b.body)
				t.Logf("body %d, %d MB (%s): %d %.80s", i, len(b.body)>>20, b.path, code, body)
				if code != b.status {
					t.Errorf("body %d: %d %.300s, want %d", i, code, body, b.status)
				}
			}()
		}
		wg.Wait()
	}

	// A graph that fits the budget but needs 400 MB per image: serving it
	// (one pass on a blank image at load) must show beyond the margin, or
	// the measurement would not see libtorch's memory at all.
	heavy := filepath.Join(dir, "heavy.onnx")
	if err := os.WriteFile(heavy, onnxtest.ExpandBomb(1, 28, 28, 65536, 10), 0o644); err != nil {
		t.Fatal(err)
	}
	type run struct {
		name  string
		args  []string
		serve func(string)
		code  int
		says  string
	}
	groups := []struct {
		benign  run
		attacks []run
		control *run // must exceed the margin
	}{
		{
			benign: run{"verify a small ONNX model", []string{"verify", "--fingerprint", fpPath, "--suspect", small}, nil, 0, ""},
			attacks: []run{{"verify the ONNX Expand bomb", []string{"verify", "--fingerprint", fpPath, "--suspect", bomb}, nil, 1,
				"one image needs about 1.2 GiB of intermediate values by the importer's estimate, over the memory budget of 1.0 GiB"}},
		},
		{
			benign: run{"verify a remote suspect", append([]string{"verify", "--fingerprint", fpPath, "--suspect", endpoint(0)}, remote...), nil, 0, ""},
			attacks: []run{{"verify a remote suspect answering 60 MB", append([]string{"verify", "--fingerprint", fpPath, "--suspect", endpoint(60 << 20)}, remote...), nil, 1,
				"larger than"}},
		},
		{
			benign:  run{"serve-model, one request", []string{"serve-model", "--model", small, "--addr", "127.0.0.1:0"}, serveBenign, 0, ""},
			attacks: []run{{"serve-model, 3 × 48 MB and a 22 MB body at once", []string{"serve-model", "--model", small, "--addr", "127.0.0.1:0"}, serveBombs, 0, ""}},
			control: &run{"control: serve-model of a 400 MB-per-image graph", []string{"serve-model", "--model", heavy, "--addr", "127.0.0.1:0"}, func(string) {}, 0, ""},
		},
	}
	measure := func(r run) int64 {
		start := time.Now()
		c := runChild(t, append(r.args, flags...), r.serve)
		t.Logf("%-50s exit %d, peak RSS %4d MiB (%.1f s)", r.name, c.code, c.peak>>20, time.Since(start).Seconds())
		if c.code != r.code || !strings.Contains(c.output, r.says) {
			t.Errorf("%s: exit %d: %s; want exit %d saying %q", r.name, c.code, c.output, r.code, r.says)
		}
		return c.peak
	}
	for _, g := range groups {
		base := measure(g.benign)
		for _, a := range g.attacks {
			if peak := measure(a); peak > base+attackMargin {
				t.Errorf("%s: peak RSS %d MiB, over the benign run's %d MiB + %d MiB", a.name, peak>>20, base>>20, attackMargin>>20)
			}
		}
		if g.control != nil {
			if peak := measure(*g.control); peak <= base+attackMargin {
				t.Errorf("%s: peak RSS %d MiB, within the benign run's %d MiB + %d MiB: the measurement misses tensor memory", g.control.name, peak>>20, base>>20, attackMargin>>20)
			}
		}
	}
}

func jsonDecode(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) }
