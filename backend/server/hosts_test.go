package server

import (
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
)

// TestHostPolicy lists the Host headers each kind of bind answers to.
func TestHostPolicy(t *testing.T) {
	name, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		addr  string
		extra []string
		host  string
		ok    bool
	}{
		{"127.0.0.1:8080", nil, "127.0.0.1:8080", true},
		{"127.0.0.1:8080", nil, "127.0.0.1", true},
		{"127.0.0.1:8080", nil, "127.9.9.9:8080", true},
		{"127.0.0.1:8080", nil, "localhost:8080", true},
		{"127.0.0.1:8080", nil, "LocalHost.:8080", true},
		{"127.0.0.1:8080", nil, "[::1]:8080", true},
		{"127.0.0.1:8080", nil, "[::ffff:127.0.0.1]:8080", true},
		{"localhost:8080", nil, "localhost:8080", true},
		{"127.0.0.1:8080", nil, "rebind.example:8080", false},
		{"127.0.0.1:8080", nil, "127.0.0.1.nip.io:8080", false},
		{"127.0.0.1:8080", nil, "localhost.evil.example:8080", false},
		{"127.0.0.1:8080", nil, "evil.localhost:8080", false},
		{"127.0.0.1:8080", nil, "192.0.2.7:8080", false},
		{"127.0.0.1:8080", nil, "", false},
		{"127.0.0.1:8080", []string{"conferral.lan"}, "conferral.lan:8080", true},
		{"127.0.0.1:8080", []string{"https://Conferral.LAN:8443/"}, "conferral.lan", true},
		{"127.0.0.1:8080", []string{"conferral.lan"}, "other.lan:8080", false},
		{"0.0.0.0:8080", nil, "192.0.2.7:8080", true},
		{"0.0.0.0:8080", nil, "[2001:db8::7]:8080", true},
		{"0.0.0.0:8080", nil, name + ":8080", true},
		{"0.0.0.0:8080", nil, "rebind.example:8080", false},
		{"[::]:8080", nil, "192.0.2.7", true},
		{":8080", nil, "192.0.2.7:8080", true},
		{":8080", nil, name + ":8080", true},
		{":8080", nil, "rebind.example:8080", false},
		{"10.1.2.3:8080", nil, "10.1.2.3:8080", true},
		{"10.1.2.3:8080", nil, "10.1.2.4:8080", false},
		{"10.1.2.3:8080", nil, "rebind.example:8080", false},
		{"models.lan:8080", nil, "models.lan:8080", true},
		{"models.lan:8080", nil, "rebind.example:8080", false},
	}
	for _, c := range cases {
		p, err := newHostPolicy(c.addr, c.extra)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.allows(c.host); got != c.ok {
			t.Errorf("bound to %s (hosts %v): Host %q allowed %v, want %v", c.addr, c.extra, c.host, got, c.ok)
		}
	}
	if _, err := newHostPolicy("127.0.0.1:8080", []string{"*"}); err == nil {
		t.Error("host \"*\" accepted")
	}
}

// TestDNSRebinding plays a page whose name rebinds to 127.0.0.1 against
// the default loopback server (no token): with its own name in Host and
// Origin it can neither read nor change anything, over HTTP or the
// websocket, while the server's own names still work.
func TestDNSRebinding(t *testing.T) {
	ts := start(t, Config{Dir: t.TempDir(), Hosts: []string{"conferral.lan"}})
	port := ts.http.URL[strings.LastIndex(ts.http.URL, ":")+1:]
	rebound := "rebind.example:" + port
	job := `{"kind":"train","train":{"name":"x","arch":"nope"}}` // refused with 400 once it is read
	cases := []struct {
		name, method, path, host, origin string
		want                             int
	}{
		{"read the models", "GET", "/api/models", rebound, "", http.StatusMisdirectedRequest},
		{"read the jobs", "GET", "/api/jobs", rebound, "http://" + rebound, http.StatusMisdirectedRequest},
		{"read the app", "GET", "/", rebound, "", http.StatusMisdirectedRequest},
		{"submit", "POST", "/api/jobs", rebound, "http://" + rebound, http.StatusMisdirectedRequest},
		{"cancel", "POST", "/api/jobs/1/cancel", rebound, "http://" + rebound, http.StatusMisdirectedRequest},
		{"submit, Host own, Origin the rebound page", "POST", "/api/jobs", "127.0.0.1:" + port, "http://" + rebound, http.StatusForbidden},
		{"submit from another local port", "POST", "/api/jobs", "localhost:" + port, "http://localhost:1", http.StatusForbidden},
		{"submit from a file: page", "POST", "/api/jobs", "localhost:" + port, "null", http.StatusForbidden},
		{"read by its address", "GET", "/api/models", "127.0.0.1:" + port, "", http.StatusOK},
		{"read by localhost", "GET", "/api/models", "localhost:" + port, "", http.StatusOK},
		{"read by a configured name", "GET", "/api/models", "conferral.lan:" + port, "", http.StatusOK},
		{"submit from its own page", "POST", "/api/jobs", "localhost:" + port, "http://localhost:" + port, http.StatusBadRequest},
		{"submit from a configured name's page", "POST", "/api/jobs", "conferral.lan:" + port, "http://conferral.lan:" + port, http.StatusBadRequest},
		{"submit without a browser", "POST", "/api/jobs", "127.0.0.1:" + port, "", http.StatusBadRequest},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var body *strings.Reader
			if c.method == "POST" {
				body = strings.NewReader(job)
			} else {
				body = strings.NewReader("")
			}
			req, err := http.NewRequest(c.method, ts.http.URL+c.path, body)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = c.host
			req.Header.Set("Content-Type", "application/json")
			if c.origin != "" {
				req.Header.Set("Origin", c.origin)
			}
			if got := ts.do(req, nil); got != c.want {
				t.Errorf("%s %s with Host %q, Origin %q: %d, want %d", c.method, c.path, c.host, c.origin, got, c.want)
			}
		})
	}
	ws := "ws" + strings.TrimPrefix(ts.http.URL, "http") + "/api/events"
	for _, c := range []struct {
		name, host, origin string
		ok                 bool
	}{
		{"rebound page", rebound, "http://" + rebound, false},
		{"rebound page, own Host", "127.0.0.1:" + port, "http://" + rebound, false},
		{"own page", "localhost:" + port, "http://localhost:" + port, true},
		{"own page by address", "127.0.0.1:" + port, "http://127.0.0.1:" + port, true},
		{"no browser", "127.0.0.1:" + port, "", true},
	} {
		t.Run("websocket "+c.name, func(t *testing.T) {
			h := http.Header{"Host": {c.host}}
			if c.origin != "" {
				h.Set("Origin", c.origin)
			}
			conn, resp, err := websocket.DefaultDialer.Dial(ws, h)
			if conn != nil {
				conn.Close()
			}
			if (err == nil) != c.ok {
				t.Errorf("dial with Host %q, Origin %q: %v (%v), want ok=%v", c.host, c.origin, err, resp, c.ok)
			}
		})
	}
}
