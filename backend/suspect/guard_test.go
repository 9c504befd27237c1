package suspect

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestCheckAddr refuses every non-public form, IPv4 inside IPv6 included.
func TestCheckAddr(t *testing.T) {
	cases := []struct {
		ip      string
		refused bool
	}{
		{"127.0.0.1", true},
		{"127.255.0.7", true},
		{"10.0.0.1", true},
		{"10.255.255.255", true},
		{"172.16.0.1", true},
		{"172.31.255.254", true},
		{"192.168.1.1", true},
		{"169.254.169.254", true}, // cloud metadata
		{"169.254.0.1", true},
		{"0.0.0.0", true},
		{"0.1.2.3", true},
		{"100.64.0.1", true},
		{"224.0.0.1", true},
		{"255.255.255.255", true},
		{"::1", true},
		{"::", true},
		{"fc00::1", true},
		{"fd00:ec2::254", true}, // AWS metadata over IPv6
		{"fe80::1", true},
		{"fe80::1%eth0", true},
		{"ff02::1", true},
		{"::ffff:127.0.0.1", true},
		{"::ffff:10.1.2.3", true},
		{"::ffff:169.254.169.254", true},
		{"::127.0.0.1", true},        // IPv4-compatible
		{"64:ff9b::7f00:1", true},    // NAT64 of 127.0.0.1
		{"64:ff9b::a9fe:a9fe", true}, // NAT64 of 169.254.169.254
		{"2002:7f00:1::", true},      // 6to4 of 127.0.0.1
		{"2002:c0a8:101::1", true},   // 6to4 of 192.168.1.1
		{"8.8.8.8", false},
		{"1.1.1.1", false},
		{"172.32.0.1", false},
		{"172.15.255.255", false},
		{"169.253.0.1", false},
		{"::ffff:8.8.8.8", false},
		{"64:ff9b::808:808", false},
		{"2606:4700:4700::1111", false},
		{"2002:808:808::1", false},
	}
	for _, c := range cases {
		err := CheckAddr(netip.MustParseAddr(c.ip))
		if (err != nil) != c.refused {
			t.Errorf("CheckAddr(%s) = %v, want refused=%v", c.ip, err, c.refused)
		}
		if err != nil && !errors.Is(err, ErrRefused) {
			t.Errorf("CheckAddr(%s) = %v, not ErrRefused", c.ip, err)
		}
		// The dial guard says the same about the address, and nothing
		// when private addresses are allowed.
		port := netip.AddrPortFrom(netip.MustParseAddr(c.ip), 80).String()
		if err := (Guard{}).DialControl()("tcp", port, nil); (err != nil) != c.refused {
			t.Errorf("DialControl(%s) = %v, want refused=%v", port, err, c.refused)
		}
		if err := (Guard{AllowPrivate: true}).DialControl()("tcp", port, nil); err != nil {
			t.Errorf("DialControl(%s) with private allowed = %v", port, err)
		}
	}
}

// TestCheckURL refuses other schemes, missing hosts and non-public
// literal hosts unless allowed.
func TestCheckURL(t *testing.T) {
	cases := []struct {
		url          string
		allowPrivate bool
		allow        string // a network allowed
		why          string // "" when accepted
	}{
		{url: "http://example.com/v2/models/m"},
		{url: "https://models.example.org:8443/v1/models/m:predict"},
		{url: "http://8.8.8.8:8500/v2/models/m"},
		{url: "http://[2606:4700:4700::1111]/v2/models/m"},
		{url: "ftp://example.com/m", why: "scheme"},
		{url: "file:///etc/passwd", why: "scheme"},
		{url: "gopher://example.com/", why: "scheme"},
		{url: "http:///v2/models/m", why: "no host"},
		{url: "http://example.com:99999/", why: "port"},
		{url: "http://127.0.0.1:8500/v2/models/m", why: "loopback"},
		{url: "http://10.0.0.8/v2/models/m", why: "private"},
		{url: "http://172.16.3.4/v2/models/m", why: "private"},
		{url: "http://192.168.0.10/v2/models/m", why: "private"},
		{url: "http://169.254.169.254/latest/meta-data/", why: "link-local"},
		{url: "http://0.0.0.0:8500/v2/models/m", why: "this network"},
		{url: "http://[::1]:8500/v2/models/m", why: "loopback"},
		{url: "http://[fc00::5]/v2/models/m", why: "unique-local"},
		{url: "http://[fe80::1%25eth0]/v2/models/m", why: "link-local"},
		{url: "http://[::ffff:127.0.0.1]/v2/models/m", why: "loopback"},
		{url: "http://localhost:8500/v2/models/m", why: "localhost"},
		{url: "http://LOCALHOST./v2/models/m", why: "localhost"},
		{url: "http://2130706433:8500/v2/models/m", why: "numeric host"},
		{url: "http://127.1/v2/models/m", why: "numeric host"},
		{url: "http://0x7f.0.0.1/v2/models/m", why: "numeric host"},
		{url: "http://0177.0.0.1/v2/models/m", why: "numeric host"},
		{url: "http://0x7f000001/v2/models/m", why: "numeric host"},
		{url: "http://example.com./v2/models/m"},
		{url: "http://3com.com/v2/models/m"},
		{url: "http://127.0.0.1:8500/v2/models/m", allowPrivate: true},
		{url: "http://[::1]:8500/v2/models/m", allowPrivate: true},
		{url: "http://localhost:8500/v2/models/m", allowPrivate: true},
		{url: "ftp://127.0.0.1/", allowPrivate: true, why: "scheme"},
		{url: "http://10.1.2.3/v2/models/m", allow: "10.1.2.0/24"},
		{url: "http://10.1.3.3/v2/models/m", allow: "10.1.2.0/24", why: "private"},
	}
	for _, c := range cases {
		g := Guard{AllowPrivate: c.allowPrivate}
		if c.allow != "" {
			g.Allow = []netip.Prefix{netip.MustParsePrefix(c.allow)}
		}
		_, err := g.CheckURL(c.url)
		switch {
		case c.why == "" && err != nil:
			t.Errorf("%s (private %v, allow %q): %v", c.url, c.allowPrivate, c.allow, err)
		case c.why != "" && (err == nil || !strings.Contains(err.Error(), c.why) || !errors.Is(err, ErrRefused)):
			t.Errorf("%s (private %v, allow %q): error %v, want one about %q", c.url, c.allowPrivate, c.allow, err, c.why)
		}
	}
}

// listen serves h on addr (a loopback address and port 0).
func listen(t *testing.T, addr string, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := httptest.NewUnstartedServer(h)
	s.Listener.Close()
	s.Listener = ln
	s.Start()
	t.Cleanup(s.Close)
	return s.URL
}

// TestGuardedClient dials real servers: a name that resolves to loopback
// is refused at dial time, and a redirect from an allowed server to a
// private address, literal or not, is refused.
func TestGuardedClient(t *testing.T) {
	var inner int
	target := listen(t, "127.0.0.2:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inner++
		fmt.Fprint(w, "secret")
	}))
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })
	redirector := listen(t, "127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/to-private":
			http.Redirect(w, r, target+"/", http.StatusFound)
		case "/to-metadata":
			http.Redirect(w, r, "http://169.254.169.254/latest/meta-data/", http.StatusFound)
		case "/to-file":
			http.Redirect(w, r, "file:///etc/passwd", http.StatusFound)
		case "/loop":
			http.Redirect(w, r, "/loop", http.StatusFound)
		default:
			ok(w, r)
		}
	}))
	port := redirector[strings.LastIndex(redirector, ":")+1:]
	only1 := Guard{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}
	cases := []struct {
		name string
		g    Guard
		url  string
		why  string // "" when it must succeed
	}{
		{"loopback literal", Guard{}, redirector + "/", "loopback"},
		{"name resolving to loopback", Guard{}, "http://localhost:" + port + "/", "loopback"},
		{"allowed network", only1, redirector + "/", ""},
		{"all private allowed", Guard{AllowPrivate: true}, redirector + "/", ""},
		{"redirect to another loopback address", only1, redirector + "/to-private", "loopback"},
		{"redirect to metadata", only1, redirector + "/to-metadata", "link-local"},
		{"redirect to file", only1, redirector + "/to-file", "scheme"},
		{"redirect loop", only1, redirector + "/loop", "redirects"},
		{"redirect allowed when private is", Guard{AllowPrivate: true}, redirector + "/to-private", ""},
	}
	// https never redirects to http: the answer would travel in clear.
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, redirector+"/", http.StatusFound)
	}))
	t.Cleanup(tlsSrv.Close)
	t.Run("redirect from https to http", func(t *testing.T) {
		c := Guard{AllowPrivate: true}.Client(5 * time.Second)
		c.Transport.(*http.Transport).TLSClientConfig = tlsSrv.Client().Transport.(*http.Transport).TLSClientConfig
		resp, err := c.Get(tlsSrv.URL + "/")
		if err == nil {
			resp.Body.Close()
		}
		if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "redirect from https to http") {
			t.Errorf("error %v, want a refusal of the downgrade", err)
		}
	})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := inner
			resp, err := c.g.Client(5 * time.Second).Get(c.url)
			if err == nil {
				resp.Body.Close()
			}
			if c.why == "" {
				if err != nil {
					t.Fatalf("GET %s: %v", c.url, err)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), c.why) {
				t.Fatalf("GET %s: error %v, want a refusal about %q", c.url, err, c.why)
			}
			if inner != before {
				t.Error("the private server was reached")
			}
		})
	}
}
