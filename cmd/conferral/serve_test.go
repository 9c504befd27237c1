package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestServe starts `conferral serve` in-process on a free port and talks
// to it over HTTP: on loopback it needs no token; on any other address it
// generates one, prints it, and refuses requests without it.
func TestServe(t *testing.T) {
	for _, tc := range []struct {
		name, addr string
		token      bool
	}{
		{"loopback", "127.0.0.1:0", false},
		{"all addresses", "0.0.0.0:0", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			pr, pw := io.Pipe()
			var stderr bytes.Buffer
			done := make(chan int, 1)
			go func() {
				done <- run(ctx, []string{"serve", "--addr", tc.addr, "--dir", t.TempDir(), "--threads", "1", "--device", "cpu"}, pw, &stderr)
				pw.Close()
			}()
			line, err := bufio.NewReader(pr).ReadString('\n')
			if err != nil {
				t.Fatalf("no address printed: %v; stderr: %s", err, stderr.String())
			}
			go io.Copy(io.Discard, pr)
			i := strings.Index(line, "http://")
			if i < 0 {
				t.Fatalf("no URL in %q", line)
			}
			u, err := url.Parse(strings.Fields(line[i:])[0])
			if err != nil {
				t.Fatal(err)
			}
			token := u.Query().Get("token")
			if (token != "") != tc.token {
				t.Fatalf("printed %q: token %q, want one: %v", line, token, tc.token)
			}
			u.Host = strings.Replace(u.Host, "0.0.0.0", "127.0.0.1", 1)
			base := "http://" + u.Host
			get := func(path, bearer string) int {
				req, _ := http.NewRequest("GET", base+path, nil)
				if bearer != "" {
					req.Header.Set("Authorization", "Bearer "+bearer)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				return resp.StatusCode
			}
			if code := get("/api/health", token); code != http.StatusOK {
				t.Errorf("GET /api/health: %d", code)
			}
			if code := get("/", token); code != http.StatusOK {
				t.Errorf("GET /: %d", code)
			}
			if tc.token {
				if code := get("/api/health", ""); code != http.StatusUnauthorized {
					t.Errorf("GET /api/health without the token: %d, want 401", code)
				}
			}
			cancel()
			if code := <-done; code != 0 {
				t.Errorf("exit %d after Ctrl-C; stderr: %s", code, stderr.String())
			}
		})
	}
}

// TestServeRefusesBadThreads: a negative --solo-threads or no worker is a
// usage error before the server starts.
func TestServeRefusesBadThreads(t *testing.T) {
	for _, tc := range []struct{ name, flag, value string }{
		{"negative solo threads", "--solo-threads", "-1"},
		{"no workers", "--workers", "0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := invoke(t, context.Background(), "serve", "--dir", t.TempDir(), "--addr", "127.0.0.1:0", tc.flag, tc.value)
			if code != 2 || !strings.Contains(stderr, tc.flag+" "+tc.value) {
				t.Errorf("serve %s %s: exit %d, %q; want 2 naming the flag", tc.flag, tc.value, code, stderr)
			}
		})
	}
}
