// Package discovertest implements the peers of key discovery for tests,
// on loopback: a DNS server (github.com/miekg/dns) that answers with or
// without the AD bit, slowly or with SERVFAIL when told, and an HTTPS Web
// Key Directory with a certificate from a test CA.
package discovertest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Entry is the answer for one name and type.
type Entry struct {
	RRs   []dns.RR
	AD    bool          // set the AD bit (the resolver validated the answer)
	Rcode int           // e.g. dns.RcodeServerFailure; 0 = NOERROR
	Delay time.Duration // wait this long before answering
}

// DNS is a DNS server on 127.0.0.1 (UDP and TCP, one port). Names without
// an entry get NXDOMAIN.
type DNS struct {
	Addr string // host:port, for [discovery] resolver

	mu      sync.Mutex
	entries map[string]*Entry // "name./TYPE"
	queries []string
	servers []*dns.Server
	stop    chan struct{} // ends delays at cleanup
}

func entryKey(name string, qtype uint16) string {
	return strings.ToLower(dns.Fqdn(name)) + "/" + dns.TypeToString[qtype]
}

// StartDNS starts a server, stopped at the end of the test.
func StartDNS(t testing.TB) *DNS {
	t.Helper()
	s := &DNS{entries: map[string]*Entry{}, stop: make(chan struct{})}
	// One port for UDP and TCP: retry when the TCP side is taken.
	var pc net.PacketConn
	var l net.Listener
	var err error
	for range 20 {
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if l, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	s.Addr = pc.LocalAddr().String()
	h := dns.HandlerFunc(s.serve)
	var wg sync.WaitGroup
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: l, Handler: h}} {
		s.servers = append(s.servers, srv)
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		wg.Add(1)
		go func() { defer wg.Done(); srv.ActivateAndServe() }()
		<-started
	}
	t.Cleanup(func() {
		close(s.stop)
		for _, srv := range s.servers {
			srv.Shutdown()
		}
		wg.Wait()
	})
	return s
}

func (s *DNS) serve(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = true
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	s.mu.Lock()
	s.queries = append(s.queries, entryKey(q.Name, q.Qtype))
	e := s.entries[entryKey(q.Name, q.Qtype)]
	var exists bool
	for k := range s.entries {
		if strings.HasPrefix(k, strings.ToLower(q.Name)+"/") {
			exists = true
		}
	}
	s.mu.Unlock()
	if e == nil {
		if !exists {
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
		return
	}
	if e.Delay > 0 {
		select {
		case <-time.After(e.Delay):
		case <-s.stop:
			return
		}
	}
	m.Rcode = e.Rcode
	m.AuthenticatedData = e.AD
	if e.Rcode == dns.RcodeSuccess {
		m.Answer = e.RRs
	}
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(opt.UDPSize(), opt.Do())
	}
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp && m.Len() > 1232 {
		m.Answer, m.Truncated = nil, true
	}
	w.WriteMsg(m)
}

// Set sets the answer for name and type.
func (s *DNS) Set(name string, qtype uint16, e Entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.entries[entryKey(name, qtype)] = &e
}

// Queries returns the questions asked so far ("name./TYPE").
func (s *DNS) Queries() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.queries...)
}

func hdr(name string, t uint16) dns.RR_Header {
	return dns.RR_Header{Name: dns.Fqdn(name), Rrtype: t, Class: dns.ClassINET, Ttl: 300}
}

// A answers name with the IPv4 address ip (and NODATA for AAAA).
func (s *DNS) A(name, ip string) {
	s.Set(name, dns.TypeA, Entry{RRs: []dns.RR{&dns.A{Hdr: hdr(name, dns.TypeA), A: net.ParseIP(ip).To4()}}})
	s.Set(name, dns.TypeAAAA, Entry{})
}

// daneName is the owner name of a DANE record for addr.
func daneName(addr, label string) string {
	local, domain, _ := strings.Cut(addr, "@")
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		local, domain = addr[:i], addr[i+1:]
	}
	h := sha256.Sum256([]byte(local))
	return hex.EncodeToString(h[:28]) + "." + label + "." + strings.ToLower(domain) + "."
}

// OPENPGPKEY publishes a binary public key for addr, validated (AD) or not.
func (s *DNS) OPENPGPKEY(addr string, key []byte, ad bool) {
	name := daneName(addr, "_openpgpkey")
	s.Set(name, dns.TypeOPENPGPKEY, Entry{AD: ad, RRs: []dns.RR{&dns.OPENPGPKEY{Hdr: hdr(name, dns.TypeOPENPGPKEY),
		PublicKey: base64.StdEncoding.EncodeToString(key)}}})
}

// SMIMEA publishes a record for addr: a whole certificate (selector 0,
// matching type 0) with the given usage, validated (AD) or not.
func (s *DNS) SMIMEA(addr string, usage uint8, der []byte, ad bool) {
	s.SMIMEARecord(addr, usage, 0, 0, hex.EncodeToString(der), ad)
}

// SMIMEARecord publishes any SMIMEA record for addr.
func (s *DNS) SMIMEARecord(addr string, usage, selector, matching uint8, data string, ad bool) {
	name := daneName(addr, "_smimecert")
	s.Set(name, dns.TypeSMIMEA, Entry{AD: ad, RRs: []dns.RR{&dns.SMIMEA{Hdr: hdr(name, dns.TypeSMIMEA),
		Usage: usage, Selector: selector, MatchingType: matching, Certificate: data}}})
}

// Slow makes the DANE records of addr answer after delay (OPENPGPKEY and
// SMIMEA, NXDOMAIN-free: the names exist).
func (s *DNS) Slow(addr string, delay time.Duration) {
	for _, n := range []struct {
		label string
		t     uint16
	}{{"_openpgpkey", dns.TypeOPENPGPKEY}, {"_smimecert", dns.TypeSMIMEA}} {
		s.Set(daneName(addr, n.label), n.t, Entry{Delay: delay})
	}
}

// ServFail makes the DANE records of addr answer SERVFAIL (what a
// validating resolver says for bogus DNSSEC data).
func (s *DNS) ServFail(addr string) {
	for _, n := range []struct {
		label string
		t     uint16
	}{{"_openpgpkey", dns.TypeOPENPGPKEY}, {"_smimecert", dns.TypeSMIMEA}} {
		s.Set(daneName(addr, n.label), n.t, Entry{Rcode: dns.RcodeServerFailure})
	}
}

// CA is a test certificate authority.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	// File holds the certificate as PEM, for [discovery] ca_file.
	File string
}

// NewCA makes a CA whose certificate is written into a temporary file.
func NewCA(t testing.TB) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cryptmilter test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	file := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return &CA{Cert: cert, Key: key, File: file}
}

// Leaf issues a TLS server certificate for hosts.
func (ca *CA) Leaf(t testing.TB, hosts ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: hosts[0]},
		DNSNames: hosts, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// Method is a WKD method a key is published with.
type Method int

// The methods.
const (
	Advanced Method = iota + 1 // https://openpgpkey.DOMAIN/.well-known/openpgpkey/DOMAIN/…
	Direct                     // https://DOMAIN/.well-known/openpgpkey/…
)

// WKD is an HTTPS server for the Web Key Directories of some domains.
type WKD struct {
	Addr string // host:port it listens on

	mu       sync.Mutex
	keys     map[string][]byte // "host path" → key
	policy   map[string]bool   // host → serves the policy file
	delay    time.Duration
	status   int // answer every request with this status (0: normal)
	requests []string
	srv      *http.Server
}

// StartWKD serves HTTPS on listen ("127.0.0.1:0" or, as root,
// "127.x.y.z:443") with a certificate from ca for hosts; stopped at the
// end of the test.
func StartWKD(t testing.TB, ca *CA, listen string, hosts ...string) *WKD {
	t.Helper()
	l, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	w := &WKD{Addr: l.Addr().String(), keys: map[string][]byte{}, policy: map[string]bool{}}
	w.srv = &http.Server{Handler: w, TLSConfig: &tls.Config{Certificates: []tls.Certificate{ca.Leaf(t, hosts...)}},
		ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	done := make(chan struct{})
	go func() { defer close(done); w.srv.ServeTLS(l, "", "") }()
	t.Cleanup(func() {
		w.srv.Close()
		<-done
	})
	return w
}

// Port is the port the server listens on.
func (w *WKD) Port() string {
	_, p, _ := net.SplitHostPort(w.Addr)
	return p
}

func (w *WKD) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	host := strings.ToLower(r.Host)
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	w.mu.Lock()
	w.requests = append(w.requests, "https://"+host+r.URL.RequestURI())
	delay, status := w.delay, w.status
	key, ok := w.keys[host+" "+r.URL.Path]
	policy := w.policy[host]
	w.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}
	if status != 0 {
		http.Error(rw, http.StatusText(status), status)
		return
	}
	switch {
	case strings.HasSuffix(r.URL.Path, "/policy") && policy:
		rw.Write(nil)
	case ok && policy:
		rw.Header().Set("Content-Type", "application/octet-stream")
		rw.Write(key)
	default:
		http.NotFound(rw, r)
	}
}

// Publish serves key (binary or armored) for addr by method; the
// method's policy file is served too.
func (w *WKD) Publish(addr string, key []byte, m Method, hash string) {
	i := strings.LastIndexByte(addr, '@')
	domain := strings.ToLower(addr[i+1:])
	w.mu.Lock()
	defer w.mu.Unlock()
	if m == Advanced {
		host := "openpgpkey." + domain
		w.keys[host+" /.well-known/openpgpkey/"+domain+"/hu/"+hash] = key
		w.policy[host] = true
	} else {
		w.keys[domain+" /.well-known/openpgpkey/hu/"+hash] = key
		w.policy[domain] = true
	}
}

// Policy turns the policy file of host on or off.
func (w *WKD) Policy(host string, on bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.policy[host] = on
}

// SetDelay makes every answer wait d.
func (w *WKD) SetDelay(d time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.delay = d
}

// SetStatus makes every answer an HTTP error with that status (0: off).
func (w *WKD) SetStatus(code int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.status = code
}

// Requests returns the URLs asked for so far.
func (w *WKD) Requests() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.requests...)
}
