package suspect

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
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
		// The rest of IANA's special-purpose registries.
		{"192.0.2.1", true},       // TEST-NET-1
		{"192.0.2.255", true},     // TEST-NET-1
		{"198.51.100.7", true},    // TEST-NET-2
		{"203.0.113.200", true},   // TEST-NET-3
		{"198.18.0.1", true},      // benchmarking
		{"198.19.255.254", true},  // benchmarking
		{"100.127.255.255", true}, // shared
		{"192.0.0.9", true},       // PCP anycast
		{"192.31.196.1", true},    // AS112
		{"192.52.193.1", true},    // AMT
		{"192.88.99.1", true},     // 6to4 relay anycast
		{"192.175.48.6", true},    // AS112 direct delegation
		{"239.255.255.250", true}, // multicast
		{"240.0.0.1", true},       // reserved
		{"255.255.255.254", true}, // reserved
		{"::ffff:192.0.2.1", true},
		{"::ffff:198.18.0.1", true},
		{"64:ff9b::c000:201", true}, // NAT64 of TEST-NET-1
		{"2002:cb00:7101::1", true}, // 6to4 of TEST-NET-3
		{"2001:db8::1", true},       // documentation
		{"2001:db8:ffff::1", true},  // documentation
		{"3fff::1", true},           // documentation
		{"2001::1", true},           // Teredo
		{"2001:2::1", true},         // benchmarking
		{"2001:20::1", true},        // ORCHIDv2
		{"2620:4f:8000::1", true},   // AS112
		{"5f00::1", true},           // SRv6
		{"100::1", true},            // discard-only
		{"100:0:0:1::1", true},      // dummy
		{"4000::1", true},           // outside 2000::/3
		{"::ffff:0:808:808", true},  // IPv4-translated, outside 2000::/3
		{"8.8.8.8", false},
		{"192.0.3.1", false},
		{"192.0.1.255", false},
		{"198.17.255.255", false},
		{"198.20.0.0", false},
		{"198.51.101.1", false},
		{"203.0.112.255", false},
		{"100.63.255.255", false},
		{"100.128.0.0", false},
		{"223.255.255.254", false},
		{"2001:db9::1", false},
		{"2001:200::1", false}, // just past 2001::/23
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

// fixed is a Guard.Local that answers addrs.
func fixed(addrs ...string) func() ([]netip.Addr, error) {
	return func() ([]netip.Addr, error) {
		out := make([]netip.Addr, len(addrs))
		for i, a := range addrs {
			out[i] = netip.MustParseAddr(a)
		}
		return out, nil
	}
}

// TestGuardOwnAddresses refuses this host's own addresses whatever their
// range, at the URL check and at the dial, before any connection: the
// real interfaces' addresses, and (as on a machine numbered in TEST-NET-1
// or with a public address) addresses a test cannot give itself.
func TestGuardOwnAddresses(t *testing.T) {
	own, err := InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	if len(own) == 0 {
		t.Fatal("no interface addresses")
	}
	for _, a := range own {
		ap := netip.AddrPortFrom(a, 8080).String()
		if _, err := (Guard{}).CheckURL("http://" + ap + "/v2/models/m"); !errors.Is(err, ErrRefused) {
			t.Errorf("CheckURL(own address %s) = %v, want a refusal", ap, err)
		}
		if err := (Guard{}).DialControl()("tcp", ap, nil); !errors.Is(err, ErrRefused) {
			t.Errorf("DialControl(own address %s) = %v, want a refusal", ap, err)
		}
		if err := (Guard{AllowPrivate: true}).DialControl()("tcp", ap, nil); err != nil {
			t.Errorf("DialControl(own address %s) with private allowed = %v", ap, err)
		}
	}

	public := fixed("192.0.2.10", "8.8.4.4", "2606:4700::6810:1")
	cases := []struct {
		name string
		g    Guard
		ip   string
		why  string // "" when allowed
	}{
		{"own public address", Guard{Local: public}, "8.8.4.4", "an address of this host"},
		{"own address, IPv4-mapped", Guard{Local: public}, "::ffff:8.8.4.4", "an address of this host"},
		{"own address through NAT64", Guard{Local: public}, "64:ff9b::808:404", "an address of this host"},
		{"own address through 6to4", Guard{Local: public}, "2002:808:404::1", "an address of this host"},
		{"own public IPv6 address", Guard{Local: public}, "2606:4700::6810:1", "an address of this host"},
		{"own TEST-NET-1 address", Guard{Local: public}, "192.0.2.10", "TEST-NET-1"},
		{"own TEST-NET-1 address, its network allowed", Guard{Local: public, Allow: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}, "192.0.2.10", "an address of this host"},
		{"TEST-NET-1 neighbour, its network allowed", Guard{Local: public, Allow: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}, "192.0.2.11", ""},
		{"own address inside an allowed network", Guard{Local: public, Allow: []netip.Prefix{netip.MustParsePrefix("8.8.4.0/24")}}, "8.8.4.4", "an address of this host"},
		{"own address named alone", Guard{Local: public, Allow: []netip.Prefix{netip.MustParsePrefix("8.8.4.4/32")}}, "8.8.4.4", ""},
		{"own address, private allowed", Guard{Local: public, AllowPrivate: true}, "8.8.4.4", ""},
		{"another public address", Guard{Local: public}, "8.8.8.8", ""},
		{"unknown own addresses", Guard{Local: func() ([]netip.Addr, error) { return nil, errors.New("no netlink") }}, "8.8.8.8", "cannot tell whether it is this host"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ip := netip.MustParseAddr(c.ip)
			errs := map[string]error{"Check": c.g.Check(ip)}
			errs["DialControl"] = c.g.DialControl()("tcp", netip.AddrPortFrom(ip, 443).String(), nil)
			_, errs["CheckURL"] = c.g.CheckURL("https://" + netip.AddrPortFrom(ip, 443).String() + "/v2/models/m")
			for where, err := range errs {
				if c.why == "" && err != nil {
					t.Errorf("%s(%s) = %v, want allowed", where, c.ip, err)
				}
				if c.why != "" && (!errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), c.why)) {
					t.Errorf("%s(%s) = %v, want a refusal about %q", where, c.ip, err, c.why)
				}
			}
		})
	}

	// Through a real client: a server on 127.0.0.1, allowed as a network,
	// is refused once 127.0.0.1 is this host's address, and the refusal
	// comes before any connection is made.
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "secret") }))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	resp, err := Guard{Allow: loopback, Local: fixed("127.0.0.1")}.Client(5 * time.Second).Get(srv.URL + "/")
	if err == nil {
		resp.Body.Close()
	}
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "an address of this host") {
		t.Fatalf("GET %s as this host's address: %v, want a refusal", srv.URL, err)
	}
	// The same server is reachable when 127.0.0.1 is not this host's:
	// the count below would have seen the refused attempt's connection.
	resp, err = Guard{Allow: loopback, Local: fixed()}.Client(5 * time.Second).Get(srv.URL + "/")
	if err != nil {
		t.Fatalf("GET %s: %v", srv.URL, err)
	}
	resp.Body.Close()
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections reached the server, want only the allowed one", n)
	}
}
