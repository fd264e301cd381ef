package crypto

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cryptmilter/cryptmilter/crypto/mime"
	"github.com/cryptmilter/cryptmilter/internal/spool"
	"github.com/cryptmilter/cryptmilter/keystore"
)

var (
	inReject5xx   = regexp.MustCompile(`^5[0-9][0-9] 5\.[0-9]{1,3}\.[0-9]{1,3} [ -~]+$`)
	inTempfail4xx = regexp.MustCompile(`^4[0-9][0-9] 4\.[0-9]{1,3}\.[0-9]{1,3} [ -~]+$`)
	inFieldName   = regexp.MustCompile(`^[!-9;-~]+$`)
)

// FuzzInbound runs the inbound engine on arbitrary messages with a real
// gateway keyring (OpenPGP and S/MIME) and checks that it never panics,
// never fails internally, and only returns plans the milter can apply:
// reject and tempfail with valid 5xx/4xx replies, header operations with
// valid names and values, a CRLF body, and exactly one copy of each result
// header.
func FuzzInbound(f *testing.F) {
	opts := keystore.Options{Dir: filepath.Join(f.TempDir(), "ks")}
	if _, err := keystore.Init(opts, []string{"rt@example.org"}, false, time.Now().Add(-time.Hour)); err != nil {
		f.Fatal(err)
	}
	keys, err := keystore.Load(opts)
	if err != nil {
		f.Fatal(err)
	}
	sp, err := spool.Open(f.TempDir(), 64<<10)
	if err != nil {
		f.Fatal(err)
	}
	var engines []*Engine
	for _, action := range []Action{Accept, Reject, Tempfail} {
		pol := testPolicy(func(p *Policy) {
			p.Hostname = inHost
			p.Actions.OnDecryptError = action
			p.Inbound.RTHeaders = action == Accept
			p.Inbound.UnwrapSigned = action == Reject
			p.Inbound.KeepOriginal = action == Tempfail
			p.Limits.MaxMIMEDepth, p.Limits.MaxParts = 8, 40
		})
		engines = append(engines, New(pol, sp))
	}

	hdr := "From: a@example.net\r\nTo: rt@example.org\r\nSubject: s\r\n"
	for _, s := range []string{
		hdr + "\r\nhello\r\n",
		hdr + "X-Cryptmilter-Encryption: decrypted\r\nAuthentication-Results: " + inHost + "; smime=pass\r\n\r\nx\r\n",
		hdr + "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--\r\n",
		hdr + "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b\r\n\r\n--b\r\n\r\nVersion: 1\r\n--b\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nhQEMA0l=\r\n-----END PGP MESSAGE-----\r\n--b--\r\n",
		hdr + "Content-Type: multipart/signed; protocol=\"application/pgp-signature\"; boundary=b\r\n\r\n--b\r\n\r\nsigned\r\n--b\r\nContent-Type: application/pgp-signature\r\n\r\n-----BEGIN PGP SIGNATURE-----\r\n\r\nwsBcBAA=\r\n-----END PGP SIGNATURE-----\r\n--b--\r\n",
		hdr + "Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\nContent-Transfer-Encoding: base64\r\n\r\nMIAGCSqGSIb3DQEHA6CAMIACAQA=\r\n",
		hdr + "Content-Type: application/pkcs7-mime\r\nContent-Transfer-Encoding: base64\r\n\r\nMIAGCSqGSIb3DQEHAqCAMIACAQE=\r\n",
		hdr + "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b\r\nContent-Type: application/pkcs7-signature\r\nContent-Transfer-Encoding: base64\r\n\r\nMAA=\r\n--b--\r\n",
		hdr + "Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n-----BEGIN PGP SIGNED MESSAGE-----\r\nHash: SHA256\r\n\r\nhi\r\n-----BEGIN PGP SIGNATURE-----\r\n\r\nwsBc=3D\r\n-----END PGP SIGNATURE-----\r\n",
		hdr + "Content-Type: text/html\r\n\r\n<pre>-----BEGIN PGP MESSAGE-----\r\n</pre>\r\n",
		hdr + "Content-Type: message/rfc822\r\n\r\n" + hdr + "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=c\r\n\r\n--c\r\n--c--\r\n",
		hdr + "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: multipart/mixed; boundary=c\r\n\r\n--c\r\n\r\n--c--\r\n",
	} {
		f.Add([]byte(s))
	}
	// Real messages, when the corpus is there.
	for _, sub := range []string{"openpgp/eml", "smime"} {
		if dir := inCorpusDir(sub); dir != "" {
			files, _ := filepath.Glob(filepath.Join(dir, "*.eml"))
			for _, file := range files {
				if b, err := os.ReadFile(file); err == nil && len(b) < 16<<10 {
					f.Add(b)
				}
			}
		}
	}

	f.Fuzz(func(t *testing.T, msg []byte) {
		br := bufio.NewReader(bytes.NewReader(msg))
		h, err := mime.ReadHeader(br, 64<<10)
		if err != nil {
			return // the milter never hands over a header it could not read
		}
		rest, _ := io.ReadAll(br)
		body := toCRLF(rest)
		e := engines[len(msg)%len(engines)]
		start := time.Now()
		defer func() {
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("Process took %v on a %d-byte message", d, len(msg))
			}
		}()
		plan, err := e.Process(context.Background(), &Input{
			Direction: Inbound,
			Envelope:  Envelope{From: "a@example.net", Rcpts: []string{"rt@example.org"}},
			Message:   Message{Header: h, Body: spool.FromBytes(body)},
			Now:       time.Now(),
			Keys:      keys,
		})
		if err != nil {
			t.Fatalf("Process: %v", err)
		}
		defer plan.Close()
		switch plan.Action {
		case Accept:
			if !plan.Reply.IsZero() {
				t.Errorf("accept with reply %q", plan.Reply)
			}
		case Reject:
			if !inReject5xx.MatchString(plan.Reply.String()) {
				t.Errorf("reject with reply %q", plan.Reply)
			}
			return
		case Tempfail:
			if !inTempfail4xx.MatchString(plan.Reply.String()) {
				t.Errorf("tempfail with reply %q", plan.Reply)
			}
			return
		default:
			t.Fatalf("action %q", plan.Action)
		}
		for _, op := range plan.HeaderOps {
			switch op.Kind {
			case OpDelete, OpChange:
				// A field of the message, by name and 1-based index.
				if n := len(h.Values(op.Name)); op.Index < 1 || op.Index > n {
					t.Errorf("header op %v %q index %d: the message has %d such fields", op.Kind, op.Name, op.Index, n)
				}
			case OpInsert, OpAdd:
				if !inFieldName.MatchString(op.Name) {
					t.Errorf("header op adds a field named %q", op.Name)
				}
			default:
				t.Errorf("header op kind %v", op.Kind)
			}
			v := inFoldRE.ReplaceAllString(op.Value, " ")
			if strings.ContainsAny(v, "\r\n\x00") {
				t.Errorf("header op %s value %q has a bare line break", op.Name, op.Value)
			}
		}
		out := plan.ApplyHeader(h)
		for _, name := range []string{HeaderEncryption, HeaderSignature} {
			if n := len(out.Values(name)); n != 1 {
				t.Errorf("%d %s fields", n, name)
			}
		}
		if plan.Body != nil {
			b, err := plan.Body.Bytes()
			if err != nil {
				t.Fatal(err)
			}
			// Bare CRs may pass through from the input; bare LFs must not.
			if bytes.Count(b, []byte("\n")) != bytes.Count(b, []byte("\r\n")) {
				t.Errorf("new body has bare LF")
			}
		}
	})
}

// inCorpusDir is inCorpus without a test: "" when the corpus is absent.
func inCorpusDir(sub string) string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		p := filepath.Join(dir, "shared", "corpus", "thunderbird", sub)
		if fi, err := os.Stat(p); err == nil && fi.IsDir() {
			return p
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}
