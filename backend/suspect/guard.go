package suspect

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// ErrRefused marks a URL or address the guard will not connect to; test
// with errors.Is.
var ErrRefused = errors.New("refused")

// RefusedError says why the guard refused an address or URL.
type RefusedError struct {
	// What was refused: a URL, a host or an ip:port.
	What string
	// Why in words ("loopback address", "scheme ftp", ...).
	Why string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("%s refused: %s", e.What, e.Why)
}

// Is makes errors.Is(err, ErrRefused) true.
func (e *RefusedError) Is(target error) bool { return target == ErrRefused }

// special lists the networks a prediction endpoint may not live in unless
// the operator allows private addresses: they reach this machine, its
// local network, or a cloud's metadata service.
var special = []struct {
	prefix netip.Prefix
	why    string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "\"this network\" address"},
	{netip.MustParsePrefix("10.0.0.0/8"), "private address"},
	{netip.MustParsePrefix("100.64.0.0/10"), "shared (carrier-grade NAT) address"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback address"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local address (cloud metadata lives here)"},
	{netip.MustParsePrefix("172.16.0.0/12"), "private address"},
	{netip.MustParsePrefix("192.0.0.0/24"), "IETF protocol assignment"},
	{netip.MustParsePrefix("192.168.0.0/16"), "private address"},
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking address"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast address"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved address"},
	{netip.MustParsePrefix("::/96"), "unspecified, loopback or IPv4-compatible IPv6 address"},
	{netip.MustParsePrefix("100::/64"), "discard-only IPv6 address"},
	{netip.MustParsePrefix("fc00::/7"), "unique-local (private) IPv6 address"},
	{netip.MustParsePrefix("fe80::/10"), "link-local IPv6 address"},
	{netip.MustParsePrefix("fec0::/10"), "site-local IPv6 address"},
	{netip.MustParsePrefix("ff00::/8"), "multicast IPv6 address"},
}

// embedding are IPv6 prefixes whose addresses carry an IPv4 address that a
// translator or relay may forward to: NAT64 (RFC 6052) and 6to4.
var embedding = []struct {
	prefix netip.Prefix
	offset int // byte offset of the IPv4 address
}{
	{netip.MustParsePrefix("64:ff9b::/96"), 12},
	{netip.MustParsePrefix("64:ff9b:1::/48"), 6},
	{netip.MustParsePrefix("2002::/16"), 2},
}

// CheckAddr returns a *RefusedError when ip is loopback, private,
// link-local, unspecified, multicast or otherwise not a public unicast
// address, in any of its forms (IPv4, IPv4-mapped IPv6, NAT64, 6to4).
func CheckAddr(ip netip.Addr) error {
	if !ip.IsValid() {
		return &RefusedError{What: "address", Why: "not an IP address"}
	}
	ip = ip.WithZone("")
	orig := ip
	ip = ip.Unmap() // ::ffff:127.0.0.1 is 127.0.0.1
	for _, e := range embedding {
		if ip.Is6() && e.prefix.Contains(ip) {
			b := ip.As16()
			ip = netip.AddrFrom4([4]byte(b[e.offset : e.offset+4]))
			break
		}
	}
	if ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return &RefusedError{What: orig.String(), Why: "broadcast address"}
	}
	for _, s := range special {
		if s.prefix.Contains(ip) {
			return &RefusedError{What: orig.String(), Why: s.why}
		}
	}
	return nil
}

// numericHost reports a host name whose last label is a number (decimal,
// octal or hex): "2130706433", "127.1", "0x7f.1", "0177.0.0.1". No DNS
// name ends in one, and C resolvers read them as IPv4 addresses.
func numericHost(host string) bool {
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	last := h[strings.LastIndex(h, ".")+1:]
	if last == "" {
		return false
	}
	if strings.HasPrefix(last, "0x") {
		last = last[2:]
		return last == "" || strings.Trim(last, "0123456789abcdef") == ""
	}
	return strings.Trim(last, "0123456789") == ""
}

func parsePort(p string) (int, error) {
	n := 0
	for _, c := range p {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("not a number")
		}
		n = n*10 + int(c-'0')
		if n > 65535 {
			return 0, fmt.Errorf("too large")
		}
	}
	return n, nil
}

// Guard decides which addresses untrusted URLs may reach. The zero value
// allows public unicast addresses only.
type Guard struct {
	// AllowPrivate allows every address (loopback, private, link-local …).
	AllowPrivate bool
	// Allow lists networks allowed although not public: a known internal
	// model server, say.
	Allow []netip.Prefix
}

// Check refuses ip unless it is public or allowed.
func (g Guard) Check(ip netip.Addr) error {
	if g.AllowPrivate {
		return nil
	}
	for _, p := range g.Allow {
		if p.Contains(ip.WithZone("")) || p.Contains(ip.WithZone("").Unmap()) {
			return nil
		}
	}
	if err := CheckAddr(ip); err != nil {
		return &RefusedError{What: err.(*RefusedError).What, Why: err.(*RefusedError).Why + " (pass AllowPrivate / --allow-private to allow it)"}
	}
	return nil
}

// DialControl returns a net.Dialer Control function that refuses
// connections to addresses g does not allow. It runs after name
// resolution, on the address actually dialled, so DNS rebinding and
// redirects cannot get around it.
func (g Guard) DialControl() func(network, address string, c syscall.RawConn) error {
	return func(network, address string, _ syscall.RawConn) error {
		switch network {
		case "tcp", "tcp4", "tcp6":
		default:
			return &RefusedError{What: address, Why: "network " + network}
		}
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return &RefusedError{What: address, Why: "not an ip:port"}
		}
		if err := g.Check(ap.Addr()); err != nil {
			return &RefusedError{What: address, Why: err.(*RefusedError).Why}
		}
		return nil
	}
}

// checkURL is CheckURL's test on a parsed URL.
func (g Guard) checkURL(u *url.URL) error {
	show := u.Redacted()
	switch strings.ToLower(u.Scheme) {
	case "http", "https":
	default:
		return &RefusedError{What: show, Why: fmt.Sprintf("scheme %q (only http and https)", u.Scheme)}
	}
	host := u.Hostname()
	if host == "" {
		return &RefusedError{What: show, Why: "no host"}
	}
	if p := u.Port(); p != "" {
		if n, err := parsePort(p); err != nil || n == 0 {
			return &RefusedError{What: show, Why: fmt.Sprintf("port %q", p)}
		}
	}
	if g.AllowPrivate {
		return nil
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if err := g.Check(ip); err != nil {
			return &RefusedError{What: show, Why: err.(*RefusedError).Why}
		}
		return nil
	}
	if numericHost(host) {
		return &RefusedError{What: show, Why: fmt.Sprintf("numeric host %q is not a dotted-quad IPv4 address (resolvers read such hosts differently)", host)}
	}
	if h := strings.TrimSuffix(strings.ToLower(host), "."); (h == "localhost" || strings.HasSuffix(h, ".localhost")) && len(g.Allow) == 0 {
		return &RefusedError{What: show, Why: "localhost (pass AllowPrivate / --allow-private to allow it)"}
	}
	return nil
}

// CheckURL parses raw and checks what can be checked before connecting:
// the scheme is http or https, there is a host, and a literal IP host is
// allowed. Host names are checked when they are dialled (Client), because
// DNS may answer differently then.
func (g Guard) CheckURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("endpoint URL: %w", err)
	}
	if err := g.checkURL(u); err != nil {
		return nil, err
	}
	return u, nil
}

// maxRedirects bounds the redirects a guarded client follows.
const maxRedirects = 5

// Client returns an HTTP client for untrusted URLs: every connection is
// checked at dial time (DialControl), no proxy from the environment is
// used (it would be dialled instead of the endpoint), redirects are
// re-checked and limited, https never redirects to http, and each request
// as a whole is bounded by timeout (none when zero).
func (g Guard) Client(timeout time.Duration) *http.Client {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second, Control: g.DialControl()}
	if timeout > 0 && timeout < d.Timeout {
		d.Timeout = timeout
	}
	tr := &http.Transport{
		Proxy:                  nil,
		DialContext:            d.DialContext,
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           16,
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    10 * time.Second,
		ResponseHeaderTimeout:  timeout,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: 64 << 10,
	}
	return &http.Client{
		Transport: tr,
		Timeout:   timeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= maxRedirects {
				return &RefusedError{What: req.URL.Redacted(), Why: fmt.Sprintf("more than %d redirects", maxRedirects)}
			}
			if prev := via[len(via)-1]; strings.EqualFold(prev.URL.Scheme, "https") && !strings.EqualFold(req.URL.Scheme, "https") {
				return &RefusedError{What: req.URL.Redacted(), Why: "redirect from https to " + req.URL.Scheme}
			}
			if err := g.checkURL(req.URL); err != nil {
				return fmt.Errorf("redirect: %w", err)
			}
			return nil
		},
	}
}

// CheckURL is Guard{AllowPrivate: allowPrivate}.CheckURL(raw).
func CheckURL(raw string, allowPrivate bool) (*url.URL, error) {
	return Guard{AllowPrivate: allowPrivate}.CheckURL(raw)
}

// GuardedClient is Guard{AllowPrivate: allowPrivate}.Client(timeout).
func GuardedClient(allowPrivate bool, timeout time.Duration) *http.Client {
	return Guard{AllowPrivate: allowPrivate}.Client(timeout)
}

// isRefused reports whether err comes from the guard (never worth a retry).
func isRefused(err error) bool { return errors.Is(err, ErrRefused) }
