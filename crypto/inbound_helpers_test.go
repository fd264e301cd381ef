package crypto

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	gomessage "github.com/emersion/go-message"
	_ "github.com/emersion/go-message/charset" // iso-8859-1 and friends in inLeaves

	"github.com/cryptmilter/cryptmilter/crypto/mime"
	"github.com/cryptmilter/cryptmilter/internal/spool"
	"github.com/cryptmilter/cryptmilter/keystore"
)

// Helpers shared by the inbound tests (inbound_*_test.go). Names start
// with "in" so that they do not collide with the outbound tests' helpers.

// inHost is the authserv-id the inbound tests configure.
const inHost = "mx.example.org"

// inEngine returns an inbound engine with a spool in t.TempDir() and the
// default configuration changed by mod.
func inEngine(t testing.TB, mod func(*Policy)) *Engine {
	t.Helper()
	pol := testPolicy(func(p *Policy) {
		p.Hostname = inHost
		if mod != nil {
			mod(p)
		}
	})
	sp, err := spool.Open(t.TempDir(), 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	return New(pol, sp)
}

// inResult is one message after the engine: the plan and the message as
// the MTA would deliver it.
type inResult struct {
	plan     *Plan
	in       mime.Header // the header as received
	header   mime.Header // after the plan's header operations
	body     []byte      // the delivered body (CRLF)
	origBody []byte      // the received body (CRLF)
}

// raw is the delivered message.
func (r *inResult) raw() []byte {
	var b bytes.Buffer
	r.header.WriteTo(&b)
	b.Write(r.body)
	return b.Bytes()
}

func (r *inResult) enc() string { return r.header.Get(HeaderEncryption) }
func (r *inResult) sig() string { return r.header.Get(HeaderSignature) }

// inSplit splits a message into its header and its body with CRLF line
// ends, as the milter receives them.
func inSplit(t testing.TB, msg []byte) (mime.Header, []byte) {
	t.Helper()
	br := bufio.NewReader(bytes.NewReader(msg))
	// An mbox "From " separator line is not part of the message (the CLI
	// drops it too).
	if peek, _ := br.Peek(5); string(peek) == "From " {
		br.ReadString('\n')
	}
	h, err := mime.ReadHeader(br, 0)
	if err != nil {
		t.Fatalf("read header: %v", err)
	}
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	return h, toCRLF(rest)
}

// inProcess runs the inbound engine on msg at time now (zero: time.Now).
func inProcess(t testing.TB, e *Engine, keys *keystore.Snapshot, msg []byte, now time.Time) *inResult {
	t.Helper()
	if now.IsZero() {
		now = time.Now()
	}
	h, body := inSplit(t, msg)
	from := "sender@example.net"
	if f := fromAddresses(h); len(f) == 1 && f[0] != "" {
		from = f[0]
	}
	plan, err := e.Process(context.Background(), &Input{
		Direction: Inbound,
		Envelope:  Envelope{From: from, Rcpts: []string{"rt@example.org"}},
		Message:   Message{Header: h, Body: spool.FromBytes(bytes.Clone(body))},
		QueueID:   "TESTQ",
		Now:       now,
		Keys:      keys,
	})
	if err != nil {
		t.Fatalf("Process: %v", err)
	}
	t.Cleanup(plan.Close)
	res := &inResult{plan: plan, in: h, header: plan.ApplyHeader(h), body: body, origBody: body}
	if plan.Body != nil {
		b, err := plan.Body.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		res.body = b
	}
	return res
}

// inLeaf is one leaf of a delivered message, decoded by go-message
// (transfer encoding undone, text converted to UTF-8 from its charset).
type inLeaf struct {
	mediaType string
	filename  string
	body      []byte
}

// inLeaves parses raw with go-message, as a mail client would, and returns
// its leaves in order. A message/rfc822 part is a leaf.
func inLeaves(t testing.TB, raw []byte) []inLeaf {
	t.Helper()
	ent, err := gomessage.Read(bytes.NewReader(raw))
	if err != nil && !gomessage.IsUnknownCharset(err) && !gomessage.IsUnknownEncoding(err) {
		t.Fatalf("go-message: %v", err)
	}
	var out []inLeaf
	err = ent.Walk(func(_ []int, e *gomessage.Entity, err error) error {
		if err != nil {
			return err
		}
		mt, _, _ := e.Header.ContentType()
		if strings.HasPrefix(mt, "multipart/") {
			return nil
		}
		b, err := io.ReadAll(e.Body)
		if err != nil {
			return err
		}
		_, dp, _ := e.Header.ContentDisposition()
		out = append(out, inLeaf{mediaType: mt, filename: dp["filename"], body: b})
		return nil
	})
	if err != nil {
		t.Fatalf("go-message walk: %v", err)
	}
	return out
}

// inText returns the decoded text of the delivered message's leaves of
// type mt, joined.
func inText(t testing.TB, raw []byte, mt string) string {
	t.Helper()
	var b strings.Builder
	for _, l := range inLeaves(t, raw) {
		if l.mediaType == mt {
			b.Write(l.body)
		}
	}
	return b.String()
}

// inWant asserts the two result headers. The signature's headers=
// parameter (what the signature covers of the header) is asserted by
// TestInboundHeaderCoverage and left out here unless sig names it.
func inWant(t testing.TB, r *inResult, enc, sig string) {
	t.Helper()
	if got := r.enc(); got != enc {
		t.Errorf("%s:\n got %q\nwant %q", HeaderEncryption, got, enc)
	}
	got := r.sig()
	if !strings.Contains(sig, "; headers=") {
		got = inHeadersParam.ReplaceAllString(got, "")
	}
	if got != sig {
		t.Errorf("%s:\n got %q\nwant %q", HeaderSignature, got, sig)
	}
}

var inHeadersParam = regexp.MustCompile(`; headers=[a-z]+`)

// inUnchanged asserts that the body was left exactly as received.
func inUnchanged(t testing.TB, r *inResult) {
	t.Helper()
	if r.plan.Body != nil {
		t.Errorf("plan replaces the body; want it unchanged")
	}
	if !bytes.Equal(r.body, r.origBody) {
		t.Errorf("body changed")
	}
	for _, f := range r.header {
		if mime.IsContentField(f.Name) && r.in.Get(f.Name) != mime.Unfold(f.Value) {
			t.Errorf("%s changed to %q", f.Name, f.Value)
		}
	}
}

// inHeader builds the RFC 5322 fields of a test message (CRLF), without
// the blank line that ends the header.
func inHeader(from, subject string, extra ...string) string {
	h := "From: " + from + "\r\n" +
		"To: RT <rt@example.org>\r\n" +
		"Subject: " + subject + "\r\n" +
		"Date: Thu, 26 Nov 2026 12:00:00 +0000\r\n" +
		"Message-ID: <" + fmt.Sprintf("%x", len(subject)*7919+len(from)) + "@example.net>\r\n" +
		"MIME-Version: 1.0\r\n"
	for _, e := range extra {
		h += e + "\r\n"
	}
	return h
}

// inTools skips the test when an interop peer is missing.
func inTools(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Skipf("inbound interop tests need %s: %v", n, err)
		}
	}
}

// inRun runs a command with stdin and returns its standard output.
func inRun(stdin []byte, name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}

// inCorpus locates shared/corpus/thunderbird/sub by walking up from the
// package directory, or skips the test.
func inCorpus(t testing.TB, sub string) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		p := filepath.Join(dir, "shared", "corpus", "thunderbird", sub)
		if fi, err := os.Stat(p); err == nil && fi.IsDir() {
			return p
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Skipf("shared/corpus/thunderbird/%s not found above the package directory: corpus tests skipped", sub)
		}
		dir = parent
	}
}

// inFoldRE matches folding: CRLF followed by a space or tab.
var inFoldRE = regexp.MustCompile(`\r\n[ \t]`)

// inHeaderSafe asserts that no field of h holds a line break other than
// folding, or a NUL, and that every name is a valid field name.
func inHeaderSafe(t testing.TB, h mime.Header) {
	t.Helper()
	for _, f := range h {
		v := inFoldRE.ReplaceAllString(f.Value, " ")
		if strings.ContainsAny(v, "\r\n\x00") {
			t.Errorf("header %s carries a raw line break: %q", f.Name, f.Value)
		}
		if strings.ContainsAny(f.Name, " \t\r\n:") {
			t.Errorf("bad field name %q", f.Name)
		}
	}
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}
