package openpgp

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"io"
	"mime"
	"mime/quotedprintable"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	pgpcrypto "github.com/ProtonMail/gopenpgp/v3/crypto"
	"github.com/emersion/go-message/textproto"
)

// corpusKeys loads the Thunderbird corpus keys: every public key for
// lookups, and alice's and bob's secret keys as gateway keys.
func corpusKeys(t *testing.T, dir string) (lookup KeyLookup, secret map[string]*pgpcrypto.KeyRing) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "keys", "*.asc"))
	if err != nil || len(files) == 0 {
		t.Skipf("no corpus keys in %s", dir)
	}
	pub, err := pgpcrypto.NewKeyRing(nil)
	if err != nil {
		t.Fatal(err)
	}
	secret = map[string]*pgpcrypto.KeyRing{}
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		k, err := pgpcrypto.NewKeyFromArmored(string(b))
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		Prepare(k)
		name := filepath.Base(file)
		if strings.HasSuffix(name, "-secret.asc") {
			kr, err := pgpcrypto.NewKeyRing(k)
			if err != nil {
				t.Fatal(err)
			}
			secret[strings.SplitN(name, "@", 2)[0]] = kr
			continue
		}
		if err := pub.AddKey(k); err != nil {
			t.Fatal(err)
		}
	}
	return KeyRingLookup(pub), secret
}

// mimePart is a tiny MIME view: the header, the raw body and, for
// multiparts, the raw parts (header + body bytes as on the wire).
type mimePart struct {
	header textproto.Header
	body   []byte
}

func (p mimePart) mediaType() (string, map[string]string) {
	mt, params, _ := mime.ParseMediaType(p.header.Get("Content-Type"))
	return mt, params
}

// decodedBody undoes the transfer encoding (quoted-printable is enough here).
func (p mimePart) decodedBody(t *testing.T) []byte {
	t.Helper()
	if strings.EqualFold(p.header.Get("Content-Transfer-Encoding"), "base64") {
		b, err := io.ReadAll(base64.NewDecoder(base64.StdEncoding, bytes.NewReader(bytes.Join(bytes.Fields(p.body), nil))))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if strings.EqualFold(p.header.Get("Content-Transfer-Encoding"), "quoted-printable") {
		b, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(p.body)))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	return p.body
}

func readMIME(t *testing.T, r io.Reader) mimePart {
	t.Helper()
	br := bufio.NewReader(r)
	// Skip an mbox "From " separator line.
	if b, err := br.Peek(5); err == nil && string(b) == "From " {
		if _, err := br.ReadBytes('\n'); err != nil {
			t.Fatal(err)
		}
	}
	h, err := textproto.ReadHeader(br)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	return mimePart{h, body}
}

// rawParts returns the parts of a multipart, each as the exact bytes of
// the entity (header and body), as signed.
func rawParts(t *testing.T, p mimePart) [][]byte {
	t.Helper()
	_, params := p.mediaType()
	mr := textproto.NewMultipartReader(bytes.NewReader(p.body), params["boundary"])
	var out [][]byte
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		if err := textproto.WriteHeader(&b, part.Header); err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(&b, part); err != nil {
			t.Fatal(err)
		}
		out = append(out, b.Bytes())
	}
}

func TestCorpusThunderbird(t *testing.T) {
	dir := findCorpus(t, filepath.Join("thunderbird", "openpgp"))
	lookup, secret := corpusKeys(t, dir)
	const (
		aliceFP = "EB85BB5FA33A75E15E944E63F231550C4F47E38E"
		bobFP   = "D1A66E1A23B182C9980F788CFBFCC82A015E7330"
	)
	now := time.Now()
	tests := []struct {
		file        string
		gateway     string // "alice", "bob", or "" for signature-only messages
		wantSig     Status
		wantSigner  string // fingerprint of the signer when valid or bad
		wantAddr    string
		nonASCII    bool
		wantPartial bool
	}{
		{file: "encrypted-and-signed-alice-to-bob-nonascii.eml", gateway: "bob", wantSig: StatusValid, wantSigner: aliceFP, wantAddr: "alice@openpgp.example", nonASCII: true},
		{file: "signed-by-0xfbfcc82a015e7330-encrypted-to-0xf231550c4f47e38e.eml", gateway: "alice", wantSig: StatusValid, wantSigner: bobFP, wantAddr: "bob@openpgp.example"},
		{file: "unsigned-encrypted-to-0xf231550c4f47e38e-from-0xfbfcc82a015e7330.eml", gateway: "alice", wantSig: StatusNone},
		{file: "encrypted-to-alice-as-hidden-recipient.eml", gateway: "alice", wantSig: -1},
		{file: "signed-by-0xfbfcc82a015e7330-to-0xf231550c4f47e38e-unencrypted.eml", wantSig: StatusValid, wantSigner: bobFP, wantAddr: "bob@openpgp.example"},
		{file: "bob-to-alice-signed-damaged-signature.eml", wantSig: StatusBad, wantSigner: bobFP},
		{file: "alice-signed.eml", wantSig: StatusValid, wantSigner: aliceFP, wantAddr: "alice@openpgp.example"},
		{file: "inline-signed-utf8.eml", wantSig: StatusUntrusted},
		{file: "partial-encrypt-for-alice-plaintext.eml", gateway: "alice", wantSig: -1, wantPartial: true},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			fh, err := os.Open(filepath.Join(dir, "eml", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			defer fh.Close()
			msg := readMIME(t, fh)
			mt, params := msg.mediaType()
			var res SigResult
			switch mt {
			case "multipart/encrypted":
				parts := rawParts(t, msg)
				if len(parts) != 2 {
					t.Fatalf("%d parts", len(parts))
				}
				payload := readMIME(t, bytes.NewReader(parts[1])).decodedBody(t)
				info, err := Inspect(payload)
				if err != nil || info.Kind != KindEncrypted || info.Surrounded {
					t.Errorf("Inspect = %+v, %v", info, err)
				}
				dir, checkEmpty := spoolDir(t)
				pt, err := Decrypt(bytes.NewReader(payload), secret[tc.gateway], lookup, now, Limits{SpoolDir: dir})
				if err != nil {
					t.Fatalf("Decrypt with %s: %v", tc.gateway, err)
				}
				plain := readAll(t, pt)
				res = pt.Signature
				wantFP := map[string]string{"alice": aliceFP, "bob": bobFP}[tc.gateway]
				if pt.DecryptedWith != wantFP {
					t.Errorf("DecryptedWith = %s, want %s", pt.DecryptedWith, wantFP)
				}
				// The plaintext is a MIME entity.
				if !bytes.Contains(bytes.ToLower(plain), []byte("content-type:")) {
					t.Errorf("plaintext is not a MIME entity: %q", plain[:min(len(plain), 200)])
				}
				if tc.nonASCII && (!utf8.Valid(plain) || bytes.IndexFunc(plain, func(r rune) bool { return r > 0x7f }) < 0) {
					// Thunderbird may transfer-encode the inner text; look
					// for the non-ASCII text after decoding the parts.
					if !nonASCIIInside(t, plain) {
						t.Errorf("no intact non-ASCII text in the plaintext")
					}
				}
				if tc.file == "encrypted-to-alice-as-hidden-recipient.eml" && !info.Hidden {
					t.Errorf("Inspect did not see the hidden recipient: %+v", info)
				}
				// The other corpus key, when not a recipient, is told apart.
				other := map[string]string{"alice": "bob", "bob": "alice"}[tc.gateway]
				otherKeyIDs := secret[other].GetKeyIDs()
				for _, k := range secret[other].GetKeys() {
					for _, sk := range k.GetEntity().Subkeys {
						otherKeyIDs = append(otherKeyIDs, sk.PublicKey.KeyId)
					}
				}
				named := false
				for _, id := range info.Recipients {
					named = named || slices.Contains(otherKeyIDs, id)
				}
				if !named && !info.Hidden {
					if _, err := Decrypt(bytes.NewReader(payload), secret[other], lookup, now, Limits{SpoolDir: dir}); err != ErrNotForUs {
						t.Errorf("Decrypt with %s = %v, want ErrNotForUs", other, err)
					}
				}
				// Thunderbird signs inside the encryption with a nested
				// multipart/signed: the caller verifies it with VerifyDetached.
				inner := readMIME(t, bytes.NewReader(plain))
				if imt, iparams := inner.mediaType(); res.Status == StatusNone && imt == "multipart/signed" {
					ip := rawParts(t, inner)
					sig := readMIME(t, bytes.NewReader(ip[1])).decodedBody(t)
					res = VerifyDetached(bytes.NewReader(ip[0]), sig, lookup, now)
					if res.HashAlgo != iparams["micalg"] {
						t.Errorf("HashAlgo = %q, micalg = %q", res.HashAlgo, iparams["micalg"])
					}
				}
				pt.Close()
				checkEmpty()
			case "multipart/signed":
				if params["protocol"] != "application/pgp-signature" {
					t.Fatalf("protocol %q", params["protocol"])
				}
				parts := rawParts(t, msg)
				if len(parts) != 2 {
					t.Fatalf("%d parts", len(parts))
				}
				sig := readMIME(t, bytes.NewReader(parts[1])).decodedBody(t)
				res = VerifyDetached(bytes.NewReader(parts[0]), sig, lookup, now)
				if res.HashAlgo != params["micalg"] {
					t.Errorf("HashAlgo = %q, micalg = %q", res.HashAlgo, params["micalg"])
				}
			case "text/plain":
				body := msg.decodedBody(t)
				info, err := Inspect(body)
				if err != nil {
					t.Fatalf("Inspect: %v", err)
				}
				if info.Surrounded != tc.wantPartial {
					t.Errorf("Surrounded = %v, want %v", info.Surrounded, tc.wantPartial)
				}
				switch info.Kind {
				case KindCleartextSigned:
					var text []byte
					text, res, err = VerifyCleartext(body, lookup, now)
					if err != nil {
						t.Fatal(err)
					}
					if len(text) == 0 {
						t.Error("empty signed text")
					}
				case KindEncrypted:
					// The block itself decrypts; the caller must report
					// "partial" and not splice it into the surrounding text.
					pt, err := Decrypt(bytes.NewReader(body), secret[tc.gateway], lookup, now, Limits{})
					if err != nil {
						t.Fatal(err)
					}
					pt.Close()
				default:
					t.Fatalf("unexpected kind %v", info.Kind)
				}
			default:
				t.Fatalf("unexpected type %s", mt)
			}
			if tc.wantSig < 0 {
				t.Logf("signature: %+v", res)
				return
			}
			if res.Status != tc.wantSig {
				t.Errorf("signature = %+v, want %v", res, tc.wantSig)
			}
			if tc.wantSigner != "" && res.KeyFingerprint != tc.wantSigner {
				t.Errorf("signer = %s, want %s", res.KeyFingerprint, tc.wantSigner)
			}
			if tc.wantAddr != "" && (len(res.SignerAddresses) != 1 || res.SignerAddresses[0] != tc.wantAddr) {
				t.Errorf("signer addresses = %v, want [%s]", res.SignerAddresses, tc.wantAddr)
			}
		})
	}
}

// nonASCIIInside reports whether some leaf of the MIME entity, after
// transfer decoding, holds valid UTF-8 text with non-ASCII characters.
func nonASCIIInside(t *testing.T, entity []byte) bool {
	t.Helper()
	p := readMIME(t, bytes.NewReader(entity))
	mt, _ := p.mediaType()
	if strings.HasPrefix(mt, "multipart/") {
		for _, raw := range rawParts(t, p) {
			if nonASCIIInside(t, raw) {
				return true
			}
		}
		return false
	}
	b := p.decodedBody(t)
	return utf8.Valid(b) && bytes.IndexFunc(b, func(r rune) bool { return r > 0x7f }) >= 0
}
