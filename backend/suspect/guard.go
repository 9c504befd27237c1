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
// the operator allows private addresses: every entry of IANA's IPv4 and
// IPv6 special-purpose address registries (RFC 6890 and its updates, as of
// 2025), globally reachable or not, and the multicast and reserved blocks.
// No model server the defender means to query lives in them, and several
// reach this machine, its local network or a cloud's metadata service.
// Longer prefixes come first so that the reason given is the most precise.
var special = []struct {
	prefix netip.Prefix
	why    string
}{
	// IPv4 (iana-ipv4-special-registry, and the multicast and class E blocks).
	{netip.MustParsePrefix("0.0.0.0/8"), "\"this network\" address"},
	{netip.MustParsePrefix("10.0.0.0/8"), "private address"},
	{netip.MustParsePrefix("100.64.0.0/10"), "shared (carrier-grade NAT) address"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback address"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local address (cloud metadata lives here)"},
	{netip.MustParsePrefix("172.16.0.0/12"), "private address"},
	{netip.MustParsePrefix("192.0.0.0/24"), "IETF protocol assignment"},
	{netip.MustParsePrefix("192.0.2.0/24"), "documentation address (TEST-NET-1)"},
	{netip.MustParsePrefix("192.31.196.0/24"), "AS112 address"},
	{netip.MustParsePrefix("192.52.193.0/24"), "AMT relay address"},
	{netip.MustParsePrefix("192.88.99.0/24"), "6to4 relay anycast address"},
	{netip.MustParsePrefix("192.168.0.0/16"), "private address"},
	{netip.MustParsePrefix("192.175.48.0/24"), "AS112 direct delegation address"},
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking address"},
	{netip.MustParsePrefix("198.51.100.0/24"), "documentation address (TEST-NET-2)"},
	{netip.MustParsePrefix("203.0.113.0/24"), "documentation address (TEST-NET-3)"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast address"},
	{netip.MustParsePrefix("255.255.255.255/32"), "broadcast address"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved address"},
	// IPv6 (iana-ipv6-special-registry). IPv4-mapped, NAT64 and 6to4
	// addresses are judged by the IPv4 address they carry (CheckAddr).
	{netip.MustParsePrefix("::1/128"), "loopback address"},
	{netip.MustParsePrefix("::/128"), "unspecified address"},
	{netip.MustParsePrefix("::/96"), "IPv4-compatible IPv6 address"},
	{netip.MustParsePrefix("100::/64"), "discard-only IPv6 address"},
	{netip.MustParsePrefix("100:0:0:1::/64"), "dummy IPv6 prefix"},
	{netip.MustParsePrefix("2001::/32"), "Teredo address (tunnels to an IPv4 host)"},
	{netip.MustParsePrefix("2001:2::/48"), "benchmarking IPv6 address"},
	{netip.MustParsePrefix("2001::/23"), "IETF protocol assignment (IPv6)"},
	{netip.MustParsePrefix("2001:db8::/32"), "documentation IPv6 address"},
	{netip.MustParsePrefix("2620:4f:8000::/48"), "AS112 direct delegation IPv6 address"},
	{netip.MustParsePrefix("3fff::/20"), "documentation IPv6 address"},
	{netip.MustParsePrefix("5f00::/16"), "SRv6 segment identifier"},
	{netip.MustParsePrefix("fc00::/7"), "unique-local (private) IPv6 address"},
	{netip.MustParsePrefix("fe80::/10"), "link-local IPv6 address"},
	{netip.MustParsePrefix("fec0::/10"), "site-local IPv6 address"},
	{netip.MustParsePrefix("ff00::/8"), "multicast IPv6 address"},
}

// globalUnicast6 is the only IPv6 block allocated for global unicast; an
// IPv6 address outside it (and not carrying an IPv4 address) is refused
// whatever future registry entries say.
var globalUnicast6 = netip.MustParsePrefix("2000::/3")

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

// reached is the address a connection to ip ends at: ip without its zone,
// the IPv4 address of an IPv4-mapped address, or the IPv4 address a NAT64
// translator or 6to4 relay forwards to.
func reached(ip netip.Addr) netip.Addr {
	ip = ip.WithZone("").Unmap() // ::ffff:127.0.0.1 is 127.0.0.1
	for _, e := range embedding {
		if ip.Is6() && e.prefix.Contains(ip) {
			b := ip.As16()
			return netip.AddrFrom4([4]byte(b[e.offset : e.offset+4]))
		}
	}
	return ip
}

// CheckAddr returns a *RefusedError when ip is in a special-purpose range
// (loopback, private, link-local, unspecified, documentation, benchmarking,
// shared, multicast, broadcast, reserved …) or otherwise not a public
// unicast address, in any of its forms (IPv4, IPv4-mapped IPv6, NAT64,
// 6to4). It does not know this host's own addresses: Guard.Check does.
func CheckAddr(ip netip.Addr) error {
	if !ip.IsValid() {
		return &RefusedError{What: "address", Why: "not an IP address"}
	}
	orig := ip.WithZone("")
	ip = reached(ip)
	for _, s := range special {
		if s.prefix.Contains(ip) {
			return &RefusedError{What: orig.String(), Why: s.why}
		}
	}
	if ip.Is6() && !globalUnicast6.Contains(ip) {
		return &RefusedError{What: orig.String(), Why: "IPv6 address outside global unicast (2000::/3)"}
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
// allows public unicast addresses that are not this host's own.
type Guard struct {
	// AllowPrivate allows every address (loopback, private, link-local,
	// this host's own …).
	AllowPrivate bool
	// Allow lists networks allowed although not public: a known internal
	// model server, say. This host's own addresses stay refused unless an
	// entry names that single address (a /32 or /128).
	Allow []netip.Prefix
	// Local lists this host's own addresses, refused whatever their range
	// (a public address, or one in a range nobody expects, reaches every
	// service bound to 0.0.0.0). Nil means the addresses of the host's
	// network interfaces, read again at every check since they change.
	Local func() ([]netip.Addr, error)
}

// InterfaceAddrs returns the addresses of this host's network interfaces.
func InterfaceAddrs() ([]netip.Addr, error) {
	as, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("listing this host's addresses: %w", err)
	}
	out := make([]netip.Addr, 0, len(as))
	for _, a := range as {
		var ip net.IP
		switch a := a.(type) {
		case *net.IPNet:
			ip = a.IP
		case *net.IPAddr:
			ip = a.IP
		default:
			continue
		}
		if addr, ok := netip.AddrFromSlice(ip); ok {
			out = append(out, addr.Unmap())
		}
	}
	return out, nil
}

// checkLocal refuses ip when a connection to it ends at one of this host's
// own addresses, unless an Allow entry names exactly that address.
func (g Guard) checkLocal(ip netip.Addr) error {
	local := g.Local
	if local == nil {
		local = InterfaceAddrs
	}
	own, err := local()
	if err != nil {
		// Fail closed: without the list, any address might be this host.
		return &RefusedError{What: ip.String(), Why: fmt.Sprintf("cannot tell whether it is this host (%v)", err)}
	}
	to := reached(ip)
	for _, a := range own {
		if reached(a) != to {
			continue
		}
		for _, p := range g.Allow {
			if p.IsSingleIP() && reached(p.Addr()) == to {
				return nil
			}
		}
		return &RefusedError{What: ip.WithZone("").String(), Why: "an address of this host"}
	}
	return nil
}

// Check refuses ip unless it is public, not this host's, or allowed.
func (g Guard) Check(ip netip.Addr) error {
	if g.AllowPrivate {
		return nil
	}
	if !ip.IsValid() {
		return &RefusedError{What: "address", Why: "not an IP address"}
	}
	err := g.checkAllowed(ip)
	if err == nil {
		err = g.checkLocal(ip)
	}
	var re *RefusedError
	if errors.As(err, &re) {
		return &RefusedError{What: re.What, Why: re.Why + " (pass AllowPrivate / --allow-private to allow it)"}
	}
	return err
}

// checkAllowed is CheckAddr, passing the networks of Allow.
func (g Guard) checkAllowed(ip netip.Addr) error {
	for _, p := range g.Allow {
		if p.Contains(ip.WithZone("")) || p.Contains(ip.WithZone("").Unmap()) {
			return nil
		}
	}
	return CheckAddr(ip)
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
