package crypto

import (
	"bufio"
	"bytes"
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	gomessage "github.com/emersion/go-message"

	"github.com/cryptmilter/cryptmilter/crypto/mime"
	"github.com/cryptmilter/cryptmilter/crypto/openpgp"
	"github.com/cryptmilter/cryptmilter/crypto/smime"
	"github.com/cryptmilter/cryptmilter/crypto/verdict"
	"github.com/cryptmilter/cryptmilter/internal/spool"
	"github.com/cryptmilter/cryptmilter/keystore"
)

// The outbound fuzz recipients: one with an OpenPGP key, one with an
// S/MIME certificate, one with neither (keys made in Go, no peers needed).
const (
	fuzzPGPRcpt   = "alice@example.net"
	fuzzSMIMERcpt = "dave@example.com"
	fuzzNoKeyRcpt = "nokey@example.com"
)

// outFuzzKeys makes a keystore with the gateway identity for
// outGatewayAddr and the public keys of fuzzPGPRcpt and fuzzSMIMERcpt,
// taken from a second keystore's gateway identities.
func outFuzzKeys(f *testing.F) *keystore.Snapshot {
	f.Helper()
	now := time.Now().Add(-time.Hour)
	gw := keystore.Options{Dir: filepath.Join(f.TempDir(), "ks")}
	peers := keystore.Options{Dir: filepath.Join(f.TempDir(), "peers")}
	if _, err := keystore.Init(gw, []string{outGatewayAddr}, false, now); err != nil {
		f.Fatal(err)
	}
	if _, err := keystore.Init(peers, []string{fuzzPGPRcpt, fuzzSMIMERcpt}, false, now); err != nil {
		f.Fatal(err)
	}
	ps, err := keystore.Load(peers)
	if err != nil {
		f.Fatal(err)
	}
	k, err := ps.GatewayOpenPGPAt(fuzzPGPRcpt, time.Now())
	if err != nil {
		f.Fatal(err)
	}
	pub, err := k.GetArmoredPublicKey()
	if err != nil {
		f.Fatal(err)
	}
	id, err := ps.GatewaySMIMEAt(fuzzSMIMERcpt, time.Now())
	if err != nil {
		f.Fatal(err)
	}
	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: id.Cert.Raw})
	for name, data := range map[string][]byte{fuzzPGPRcpt + ".asc": []byte(pub), fuzzSMIMERcpt + ".pem": cert} {
		if _, err := keystore.Import(gw, data, name, false, nil, time.Now()); err != nil {
			f.Fatal(err)
		}
	}
	snap, err := keystore.Load(gw)
	if err != nil {
		f.Fatal(err)
	}
	return snap
}

// FuzzOutbound runs the outbound engine on arbitrary messages for
// recipients with and without keys, under required and opportunistic
// policies, PGP/MIME and inline PGP, per-recipient and by-class copies. It
// checks that the engine never fails internally and returns plans the
// milter can carry out (valid replies and header operations, every
// recipient delivered exactly once), that no copy for a required
// recipient leaves unencrypted unless the message was already encrypted
// (and then every part another MIME reader, go-message, sees in it is
// ciphertext or structure), that every copy the gateway encrypted is
// itself "already encrypted" to the gateway (so that it is never
// encrypted twice), and that no result field a local sender forged goes
// out.
func FuzzOutbound(f *testing.F) {
	snap := outFuzzKeys(f)
	sp, err := spool.Open(f.TempDir(), 64<<10)
	if err != nil {
		f.Fatal(err)
	}
	type setup struct {
		e        *Engine
		rcpts    []string
		required []string // recipients the policy says must get encrypted copies
	}
	var setups []setup
	for i, mod := range []func(*Policy){
		func(p *Policy) { p.Outbound.Default = Required },
		func(p *Policy) { p.Outbound.Default = Required; p.Outbound.Prefer = SMIME; p.Outbound.Split = ByClass },
		func(p *Policy) {
			p.Outbound.Rules = []Rule{{Match: fuzzPGPRcpt, Policy: Required, Inline: true}}
			p.Outbound.ProtectHeaders = false
		},
		func(p *Policy) { p.Outbound.Default = Opportunistic; p.Outbound.HeaderConfidentiality = false },
	} {
		pol := testPolicy(func(p *Policy) {
			p.Hostname = inHost
			p.Limits.MaxMIMEDepth, p.Limits.MaxParts = 8, 40
			mod(p)
		})
		s := setup{e: New(pol, sp), rcpts: []string{fuzzPGPRcpt, fuzzSMIMERcpt}}
		switch i {
		case 0, 1:
			s.required = s.rcpts
		case 2:
			s.required = []string{fuzzPGPRcpt}
			s.rcpts = append(s.rcpts, fuzzNoKeyRcpt)
		case 3:
			s.rcpts = append(s.rcpts, fuzzNoKeyRcpt)
		}
		setups = append(setups, s)
	}

	hdr := "From: rt@example.org\r\nTo: alice@example.net, dave@example.com\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
	for _, s := range []string{
		hdr + "\r\nhello\r\n",
		hdr + "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9fe \r\nFrom here\r\n",
		hdr + "X-Cryptmilter-Signature: good\r\nAuthentication-Results: " + inHost + "; smime=pass\r\n\r\nx\r\n",
		hdr + "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAEC\r\n--b--\r\n",
		hdr + "Content-Type: multipart/signed; protocol=\"application/pgp-signature\"; boundary=b\r\n\r\n--b\r\n\r\nsigned\r\n--b\r\nContent-Type: application/pgp-signature\r\n\r\n-----BEGIN PGP SIGNATURE-----\r\n\r\nwsBcBAA=\r\n-----END PGP SIGNATURE-----\r\n--b--\r\n",
		hdr + "Content-Type: text/plain\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nhQEMA0l=\r\n-----END PGP MESSAGE-----\r\n",
		hdr + "Content-Type: message/rfc822\r\n\r\n" + hdr + "\r\ninner\r\n",
	} {
		f.Add([]byte(s), uint8(0))
	}
	// Real ciphertext: what the gateway makes for the recipients, so that
	// the fuzzer starts at the edge of "already encrypted".
	for i := range setups[:3] {
		plan, ds := outFuzzProcess(f, setups[i].e, snap, setups[i].rcpts, []byte(hdr+"\r\nsecret\r\n"))
		for _, d := range ds {
			f.Add(deliveryBytes(f, d), uint8(i))
		}
		plan.Close()
	}

	f.Fuzz(func(t *testing.T, msg []byte, which uint8) {
		s := setups[int(which)%len(setups)]
		start := time.Now()
		plan, ds := outFuzzProcess(t, s.e, snap, s.rcpts, msg)
		if plan == nil {
			return
		}
		defer plan.Close()
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("Process took %v on a %d-byte message", d, len(msg))
		}
		if err := plan.Check(); err != nil {
			t.Fatal(err)
		}
		if plan.Action != Accept {
			return
		}
		h, _ := splitMessage(msg)
		for _, op := range plan.HeaderOps {
			switch op.Kind {
			case OpDelete, OpChange:
				if n := len(h.Values(op.Name)); op.Index < 1 || op.Index > n {
					t.Errorf("header op %v %q index %d: the message has %d such fields", op.Kind, op.Name, op.Index, n)
				}
			case OpInsert, OpAdd:
				if !inFieldName.MatchString(op.Name) {
					t.Errorf("header op adds a field named %q", op.Name)
				}
			}
			if strings.ContainsAny(inFoldRE.ReplaceAllString(op.Value, " "), "\r\n\x00") {
				t.Errorf("header op %s value %q has a bare line break", op.Name, op.Value)
			}
		}
		passedEncrypted := plan.Decision == "passed" && attrValue(plan.Attrs, "reason") == "already encrypted"
		for _, d := range ds {
			for _, f := range d.Header {
				if isForgedResult(f.Name, f.Value) {
					t.Errorf("a copy carries the result field %s: %s", f.Name, f.Value)
				}
			}
			required := slices.ContainsFunc(d.Recipients, func(r string) bool { return slices.Contains(s.required, r) })
			if !required {
				continue
			}
			raw := deliveryBytes(t, d)
			dh, body := splitMessage(raw)
			if passedEncrypted {
				if why := plaintextPart(raw); why != "" {
					t.Errorf("passed as already encrypted, but %s", why)
				}
				continue
			}
			// Encrypted here: it must read as already encrypted.
			b := spool.FromBytes(body)
			if !s.e.alreadyEncrypted(dh, b) {
				t.Errorf("the copy for %v, encrypted by the gateway (%s), is not already encrypted:\n%s", d.Recipients, plan.Decision, clipBytes(raw))
			}
		}
	})
}

// outFuzzProcess runs e on msg and returns the plan and its deliveries;
// nil when the header cannot be read (the milter never hands one over).
func outFuzzProcess(t testing.TB, e *Engine, snap *keystore.Snapshot, rcpts []string, msg []byte) (*Plan, []Delivery) {
	t.Helper()
	br := bufio.NewReader(bytes.NewReader(msg))
	h, err := mime.ReadHeader(br, 64<<10)
	if err != nil {
		return nil, nil
	}
	rest, _ := io.ReadAll(br)
	m := Message{Header: h, Body: spool.FromBytes(toCRLF(rest))}
	plan, err := e.Process(context.Background(), &Input{
		Direction: Outbound,
		Envelope:  Envelope{From: outGatewayAddr, Rcpts: rcpts},
		Message:   m,
		QueueID:   "FUZZQ",
		Now:       time.Now(),
		Keys:      snap,
	})
	if err != nil {
		t.Fatalf("Process: %v", err)
	}
	ds, err := plan.Deliveries(m, rcpts)
	if err != nil {
		t.Fatalf("Deliveries: %v", err)
	}
	var got []string
	for _, d := range ds {
		got = append(got, d.Recipients...)
	}
	if plan.Action == Accept && !sameSet(got, rcpts) {
		t.Fatalf("deliveries are for %v, the message for %v", got, rcpts)
	}
	return plan, ds
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func deliveryBytes(t testing.TB, d Delivery) []byte {
	t.Helper()
	var b bytes.Buffer
	if _, err := d.Header.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	if d.Body != nil {
		if _, err := io.Copy(&b, d.Body.Reader()); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

func splitMessage(raw []byte) (mime.Header, []byte) {
	br := bufio.NewReader(bytes.NewReader(raw))
	h, _ := mime.ReadHeader(br, 0)
	rest, _ := io.ReadAll(br)
	return h, rest
}

func attrValue(attrs []slog.Attr, key string) string {
	for _, a := range attrs {
		if a.Key == key {
			return a.Value.String()
		}
	}
	return ""
}

// isForgedResult tells a result field an outbound copy must not carry:
// cryptmilter's and RT's result fields, and Authentication-Results that
// claim the gateway's authserv-id with an smime result.
func isForgedResult(name, value string) bool {
	if strings.EqualFold(name, verdict.HeaderAuthResults) {
		return forgedAuthResults(value, inHost)
	}
	return strings.HasPrefix(strings.ToLower(name), "x-cryptmilter-") || strings.HasPrefix(strings.ToLower(name), "x-rt-incoming-") ||
		strings.EqualFold(name, "X-RT-Privacy")
}

// plaintextPart reads raw with go-message (a MIME reader other than the
// gateway's) and describes the first leaf part that is neither structure
// (empty, "Version: 1") nor ciphertext; "" when there is none.
func plaintextPart(raw []byte) string {
	m, err := gomessage.Read(bytes.NewReader(raw))
	if err != nil && !gomessage.IsUnknownCharset(err) && !gomessage.IsUnknownEncoding(err) {
		return "" // go-message cannot read it: no other reader to compare with
	}
	var why string
	m.Walk(func(path []int, e *gomessage.Entity, err error) error {
		if err != nil || why != "" {
			return nil
		}
		if mr := e.MultipartReader(); mr != nil {
			return nil
		}
		b, err := io.ReadAll(io.LimitReader(e.Body, 1<<20))
		if err != nil {
			return nil
		}
		t := bytes.TrimSpace(b)
		if len(t) == 0 || string(t) == "Version: 1" || openpgp.IsCiphertext(t) || smime.IsEnvelope(b) {
			return nil
		}
		why = fmt.Sprintf("go-message reads part %v as %q", path, clipBytes(t))
		return nil
	})
	return why
}

func clipBytes(b []byte) []byte {
	if len(b) > 300 {
		return append(bytes.Clone(b[:300]), "…"...)
	}
	return b
}
