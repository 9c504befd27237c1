package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/conferral/conferral/shared"
)

// rssKB reads this process's resident set size.
func rssKB() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// BenchmarkLoad has 200 clients at once on a server over HTTP, each
// request one of: the model list, the fingerprint list, a page of jobs, a
// job, and (one in ten) a verification to queue. It reports requests per
// second and the process's peak resident memory while they ran.
//
//	go test -run '^$' -bench Load -benchtime 4000x ./backend/server
func BenchmarkLoad(b *testing.B) {
	const clients = 200
	f, dir := copyFixture(b)
	s, err := New(context.Background(), Config{Dir: dir, Device: "cpu"})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close(context.Background())
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: clients, MaxIdleConnsPerHost: clients}}
	verify, _ := json.Marshal(shared.VerifyArgs{Fingerprint: f.fp.ID, Model: f.surrogate.ID})
	paths := []string{"/api/models", "/api/fingerprints", "/api/jobs?limit=20", "/api/jobs/" + f.extractJob}
	var next, failed atomic.Int64
	peak := atomic.Int64{}
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() { // peak RSS, sampled
		defer close(sampled)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			if r := rssKB(); r > peak.Load() {
				peak.Store(r)
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	before := rssKB()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				var resp *http.Response
				var err error
				if i%10 == 0 {
					resp, err = client.Post(srv.URL+"/api/verify", "application/json", bytes.NewReader(verify))
				} else {
					resp, err = client.Get(srv.URL + paths[i%int64(len(paths))])
				}
				if err != nil {
					failed.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode >= 500 && resp.StatusCode != http.StatusServiceUnavailable {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	b.StopTimer()
	close(stop)
	<-sampled
	if n := failed.Load(); n > 0 {
		b.Errorf("%d of %d requests failed", n, b.N)
	}
	b.ReportMetric(float64(b.N)/took.Seconds(), "req/s")
	b.ReportMetric(float64(peak.Load())/1024, "peak-RSS-MB")
	b.ReportMetric(float64(peak.Load()-before)/1024, "RSS-growth-MB")
}
