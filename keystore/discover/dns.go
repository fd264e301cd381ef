package discover

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

// errTemporary marks failures worth retrying later: timeouts, SERVFAIL
// (which a validating resolver also gives for bogus DNSSEC data),
// unreachable servers.
var errTemporary = errors.New("temporary failure")

// tempError wraps err as temporary.
func tempError(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errTemporary, fmt.Sprintf(format, args...))
}

// dnsAnswer is the records of one type a name has, and whether the
// resolver vouched for them (the AD bit).
type dnsAnswer struct {
	rrs    []dns.RR
	ad     bool
	exists bool // the name exists (NOERROR), with or without records of the type
}

// query asks the resolver for name's records of type qtype, with the AD
// bit set in the query (RFC 6840 5.7) and EDNS0 with the DO bit, over UDP
// and, if the answer is truncated, TCP. NXDOMAIN and NODATA are answers;
// SERVFAIL, REFUSED and network errors are temporary errors.
func (d *Discoverer) query(ctx context.Context, name string, qtype uint16) (dnsAnswer, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.RecursionDesired = true
	m.AuthenticatedData = true
	m.SetEdns0(1232, true)
	c := &dns.Client{Net: "udp", UDPSize: 1232}
	r, _, err := c.ExchangeContext(ctx, m, d.opts.Resolver)
	if err == nil && r.Truncated {
		c.Net = "tcp"
		r, _, err = c.ExchangeContext(ctx, m, d.opts.Resolver)
	}
	qt := dns.TypeToString[qtype]
	if err != nil {
		if ctx.Err() != nil {
			return dnsAnswer{}, tempError("%s %s: no answer from %s within discovery.timeout", qt, name, d.opts.Resolver)
		}
		return dnsAnswer{}, tempError("%s %s: %v", qt, name, err)
	}
	switch r.Rcode {
	case dns.RcodeSuccess:
	case dns.RcodeNameError:
		return dnsAnswer{ad: r.AuthenticatedData}, nil
	default:
		return dnsAnswer{}, tempError("%s %s: %s from %s", qt, name, dns.RcodeToString[r.Rcode], d.opts.Resolver)
	}
	return dnsAnswer{rrs: follow(r.Answer, dns.Fqdn(name), qtype), ad: r.AuthenticatedData, exists: true}, nil
}

// follow returns the records of type qtype for name in an answer section,
// following CNAMEs (at most 8).
func follow(answer []dns.RR, name string, qtype uint16) []dns.RR {
	for range 8 {
		var out []dns.RR
		next := ""
		for _, rr := range answer {
			h := rr.Header()
			if !strings.EqualFold(h.Name, name) {
				continue
			}
			if h.Rrtype == qtype {
				out = append(out, rr)
			} else if c, ok := rr.(*dns.CNAME); ok && qtype != dns.TypeCNAME {
				next = c.Target
			}
		}
		if len(out) > 0 || next == "" {
			return out
		}
		name = next
	}
	return nil
}

// resolveHost returns the addresses of a host name (A and AAAA, asked in
// parallel) from the resolver. No address (NXDOMAIN or no records) is not
// an error; a temporary failure of both queries is.
func (d *Discoverer) resolveHost(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a}, nil
	}
	type res struct {
		ans dnsAnswer
		err error
	}
	ch := make(chan res, 2)
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		go func() {
			a, err := d.query(ctx, host, qt)
			ch <- res{a, err}
		}()
	}
	var addrs []netip.Addr
	var errs []error
	for range 2 {
		r := <-ch
		if r.err != nil {
			errs = append(errs, r.err)
			continue
		}
		for _, rr := range r.ans.rrs {
			switch v := rr.(type) {
			case *dns.A:
				if a, ok := netip.AddrFromSlice(v.A.To4()); ok {
					addrs = append(addrs, a)
				}
			case *dns.AAAA:
				if a, ok := netip.AddrFromSlice(v.AAAA); ok {
					addrs = append(addrs, a)
				}
			}
		}
	}
	if len(addrs) == 0 && len(errs) > 0 {
		return nil, errs[0]
	}
	// IPv4 first: a host without IPv6 connectivity fails faster that way.
	var v4, v6 []netip.Addr
	for _, a := range addrs {
		if a.Is4() {
			v4 = append(v4, a)
		} else {
			v6 = append(v6, a)
		}
	}
	return append(v4, v6...), nil
}

// dialHTTPS connects to a WKD host: its name is resolved through the
// configured resolver (not the system's), so that one DNS server serves
// all of discovery, and each address is tried in turn.
func (d *Discoverer) dialHTTPS(ctx context.Context, network, address string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	if d.httpsPort != "" {
		port = d.httpsPort
	}
	addrs, err := d.resolveHost(ctx, host)
	if err != nil {
		return nil, err
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("%s has no address", host)
	}
	var dialer net.Dialer
	var last error
	for _, a := range addrs {
		c, err := dialer.DialContext(ctx, "tcp", net.JoinHostPort(a.String(), port))
		if err == nil {
			return c, nil
		}
		last = err
		if ctx.Err() != nil {
			break
		}
	}
	return nil, last
}

// resolverOnLoopback reports whether the resolver is on this host, the
// only place whose AD bit DANE trusts.
func resolverOnLoopback(resolver string) bool {
	ap, err := netip.ParseAddrPort(resolver)
	return err == nil && ap.Addr().Unmap().IsLoopback()
}
