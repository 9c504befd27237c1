package server

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strings"
)

// hostPolicy says which Host headers the server answers to. A page whose
// DNS name an attacker rebinds to this machine's address reaches the
// server with the attacker's name in Host (browsers send the name of the
// page's URL), so the server answers only to the names it is bound to:
// loopback names and addresses for a loopback bind; the bound name or
// address, this machine's name and any IP literal for a wider bind (an IP
// literal cannot be rebound); and the names of Config.Hosts.
type hostPolicy struct {
	names map[string]bool
	ips   map[netip.Addr]bool
	anyIP bool
}

// newHostPolicy derives the policy from where the server listens and the
// names the operator configured (a host, host:port or URL each).
func newHostPolicy(addr string, extra []string) (hostPolicy, error) {
	p := hostPolicy{names: map[string]bool{"localhost": true}, ips: map[netip.Addr]bool{}}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	host = canonicalHost(host)
	switch ip, err := netip.ParseAddr(host); {
	case host == "" || (err == nil && ip.IsUnspecified()): // ":8080" listens everywhere too
		p.anyIP = true
		if h, err := os.Hostname(); err == nil && h != "" {
			p.names[canonicalHost(h)] = true
		}
	case err == nil:
		p.ips[ip.Unmap()] = true
	case host != "":
		p.names[host] = true
	}
	for _, h := range extra {
		name := strings.TrimSpace(h)
		if u, err := url.Parse(name); err == nil && u.Host != "" {
			name = u.Host
		}
		if hn, _, err := net.SplitHostPort(name); err == nil {
			name = hn
		}
		name = canonicalHost(name)
		if name == "" || strings.ContainsAny(name, "/ *") {
			return p, fmt.Errorf("server: host %q is not a host name or address", h)
		}
		if ip, err := netip.ParseAddr(name); err == nil {
			p.ips[ip.Unmap()] = true
			continue
		}
		p.names[name] = true
	}
	return p, nil
}

// canonicalHost lowercases a host, drops IPv6 brackets, a zone and a
// trailing dot.
func canonicalHost(h string) string {
	h = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(h)), ".")
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	if i := strings.IndexByte(h, '%'); i >= 0 {
		h = h[:i]
	}
	return h
}

// hostOf is the host part of a Host header or of a URL's host, without
// the port.
func hostOf(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return canonicalHost(h)
	}
	return canonicalHost(hostport)
}

// allows says whether the server answers to a request for hostport (a
// Host header: host or host:port).
func (p hostPolicy) allows(hostport string) bool {
	h := hostOf(hostport)
	if h == "" {
		return false
	}
	if ip, err := netip.ParseAddr(h); err == nil {
		ip = ip.Unmap()
		return ip.IsLoopback() || p.anyIP || p.ips[ip]
	}
	return p.names[h]
}
