package config

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"time"
)

// Discovery configures outbound key discovery ([discovery]): looking up
// the keys of recipients the keystore has none for, in the recipient's
// Web Key Directory and in DNSSEC-signed DANE records.
type Discovery struct {
	// Sources are the lookups to make, any of "wkd" and "dane"; empty
	// turns discovery off (the default).
	Sources []string `toml:"sources"`
	// Resolver is the DNS server (ip:port) asked for DANE records and for
	// the addresses of WKD hosts. DANE answers count only with its AD bit,
	// so with "dane" it must be a validating resolver on loopback.
	Resolver string `toml:"resolver"`
	// CAFile adds trust anchors (PEM) for WKD's HTTPS to the system's.
	CAFile string `toml:"ca_file"`
	// Timeout bounds each lookup, and all lookups of one message together.
	Timeout Duration `toml:"timeout"`
	// CacheTTL is how long a key found is used before it is looked up
	// again; NegativeTTL the same for "no key" answers.
	CacheTTL    Duration `toml:"cache_ttl"`
	NegativeTTL Duration `toml:"negative_ttl"`
}

// Discovery sources.
const (
	SourceWKD  = "wkd"
	SourceDANE = "dane"
)

func defaultDiscovery() Discovery {
	return Discovery{
		Sources:     []string{},
		Resolver:    "127.0.0.1:53",
		CAFile:      "",
		Timeout:     Duration(3 * time.Second),
		CacheTTL:    Duration(24 * time.Hour),
		NegativeTTL: Duration(time.Hour),
	}
}

// Enabled reports whether any source is configured.
func (d *Discovery) Enabled() bool { return len(d.Sources) > 0 }

// Uses reports whether source is configured.
func (d *Discovery) Uses(source string) bool { return slices.Contains(d.Sources, source) }

// check validates [discovery]; msgTimeout is limits.message_timeout.
func (d *Discovery) check(bad func(key, format string, args ...any) error, msgTimeout Duration) error {
	for i, s := range d.Sources {
		key := fmt.Sprintf("discovery.sources[%d]", i)
		if s != SourceWKD && s != SourceDANE {
			return bad(key, "%q is not one of %s | %s", s, SourceWKD, SourceDANE)
		}
		if slices.Index(d.Sources, s) != i {
			return bad(key, "%q is listed twice", s)
		}
	}
	ap, err := netip.ParseAddrPort(d.Resolver)
	if err != nil || ap.Port() == 0 {
		return bad("discovery.resolver", "%q: want an IP address and port such as \"127.0.0.1:53\" or \"[::1]:53\"", d.Resolver)
	}
	if d.Uses(SourceDANE) && !ap.Addr().Unmap().IsLoopback() {
		return bad("discovery.resolver", "%q is not on loopback: DANE trusts the resolver's AD bit, which only a validating resolver on this host (such as unbound on 127.0.0.1:53) can vouch for", d.Resolver)
	}
	if d.CAFile != "" {
		if _, err := ReadCAFile(d.CAFile); err != nil {
			return bad("discovery.ca_file", "%v", err)
		}
	}
	switch {
	case d.Timeout <= 0:
		return bad("discovery.timeout", "must be positive")
	case d.Enabled() && d.Timeout >= msgTimeout:
		return bad("discovery.timeout", "%v must be shorter than limits.message_timeout (%v)", d.Timeout.D(), msgTimeout.D())
	case d.CacheTTL <= 0:
		return bad("discovery.cache_ttl", "must be positive")
	case d.NegativeTTL <= 0:
		return bad("discovery.negative_ttl", "must be positive")
	}
	return nil
}

// ReadCAFile reads PEM certificates from path; it fails unless there is
// at least one and all parse.
func ReadCAFile(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: certificate %d: %w", path, len(out)+1, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no PEM certificate in it", path)
	}
	return out, nil
}
