package server

import (
	"bufio"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/conferral/conferral/internal/onnxtest"
)

// vmHWM reads the peak resident set size of a live process in bytes.
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmHWM %q: %v", v, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}

// uploadFile posts the ONNX file at path to /api/verify as a stream, with
// the form fields, and returns the answer's status and text.
func uploadFile(t *testing.T, url, path string, fields map[string]string) (int, string) {
	t.Helper()
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		for k, v := range fields {
			mw.WriteField(k, v)
		}
		w, _ := mw.CreateFormFile("file", "model.onnx")
		f, err := os.Open(path)
		if err != nil {
			pw.CloseWithError(err)
			return
		}
		defer f.Close()
		if _, err := io.Copy(w, f); err != nil {
			pw.CloseWithError(err)
			return
		}
		pw.CloseWithError(mw.Close())
	}()
	resp, err := http.Post(url+"/api/verify", mw.FormDataContentType(), pr)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1000))
	return resp.StatusCode, string(b)
}

// TestPeakRSSUpload uploads a 240 MB ONNX model (a valid MLP whose class
// count does not fit the fingerprint, so it is refused after the importer
// read it, as an attacker's file would be) to a server in a child process,
// and measures the server's peak resident memory against a small upload
// refused the same way. The issue measured ~1.1 GB added per 240 MB
// upload (four copies: the file's bytes, the decoded message's, a float
// slice, the tensors); the importer now returns the file's bytes to the
// system once decoded and hands the decoded bytes to libtorch without a
// float slice between, so an upload may add at most uploadFactor times its
// size.
func TestPeakRSSUpload(t *testing.T) {
	const uploadFactor = 2.5
	f, dir := copyFixture(t)
	big := filepath.Join(t.TempDir(), "big.onnx")
	if err := os.WriteFile(big, onnxtest.WideMLP(1, 28, 28, 76_000, 7), 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(big)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "CONFERRAL_SERVER_HELPER="+dir)
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ADDR ") {
		t.Fatalf("the child server said %q: %v", line, err)
	}
	url := "http://" + strings.TrimSpace(strings.TrimPrefix(line, "ADDR "))

	start := time.Now()
	code, body := uploadFile(t, url, "testdata/mlp_28x28.onnx", map[string]string{"fingerprint": f.fp.ID, "layout": "nhwc"})
	base := vmHWM(t, cmd.Process.Pid)
	t.Logf("a small upload, refused after reading: %d, server peak RSS %d MiB (%.1f s)", code, base>>20, time.Since(start).Seconds())
	if code != http.StatusBadRequest {
		t.Fatalf("the small upload: %d %s, want 400", code, body)
	}

	start = time.Now()
	code, body = uploadFile(t, url, big, map[string]string{"fingerprint": f.fp.ID})
	peak := vmHWM(t, cmd.Process.Pid)
	added := peak - base
	t.Logf("a %d MB upload, refused after reading: %d, server peak RSS %d MiB, %d MiB more (%.2f× the file; %.1f s)",
		st.Size()>>20, code, peak>>20, added>>20, float64(added)/float64(st.Size()), time.Since(start).Seconds())
	if code != http.StatusBadRequest || !strings.Contains(body, "it has 7 classes") {
		t.Fatalf("the large upload: %d %s, want 400 for its classes", code, body)
	}
	if float64(added) > uploadFactor*float64(st.Size()) {
		t.Errorf("a %d MB upload added %d MiB to the server's peak, over %.1f× its size", st.Size()>>20, added>>20, uploadFactor)
	}
}
