package smime

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// secretText is what the leak cases try to carry in clear.
const secretText = "Dear Bob, the merger is on. Nobody may know before Monday."

// envParts are the raw elements of an EnvelopedData.
type envParts struct {
	version, ris, eci []byte // DER elements
	ktri              []byte // the first recipient info
	contentAlg        []byte // DER AlgorithmIdentifier of the content
}

func splitEnvelope(t *testing.T, der []byte) envParts {
	t.Helper()
	der, err := toDER(der)
	if err != nil {
		t.Fatal(err)
	}
	in := cryptobyte.String(der)
	var ci, content, body, eci cryptobyte.String
	var p envParts
	var oid asn1.ObjectIdentifier
	var v, ris, ri, eciOID, alg cryptobyte.String
	if !in.ReadASN1(&ci, casn1.SEQUENCE) || !ci.ReadASN1ObjectIdentifier(&oid) ||
		!ci.ReadASN1(&content, casn1.Tag(0).Constructed().ContextSpecific()) ||
		!content.ReadASN1(&body, casn1.SEQUENCE) ||
		!body.ReadASN1Element(&v, casn1.INTEGER) || !body.ReadASN1Element(&ris, casn1.SET) ||
		!body.ReadASN1Element(&eci, casn1.SEQUENCE) || !body.Empty() {
		t.Fatal("cannot split the envelope")
	}
	p.version, p.ris, p.eci = v, ris, eci
	inner := cryptobyte.String(ris)
	var set cryptobyte.String
	if !inner.ReadASN1(&set, casn1.SET) || !set.ReadASN1Element(&ri, casn1.SEQUENCE) {
		t.Fatal("no key transport recipient")
	}
	p.ktri = ri
	e := cryptobyte.String(eci)
	var seq cryptobyte.String
	if !e.ReadASN1(&seq, casn1.SEQUENCE) || !seq.ReadASN1Element(&eciOID, casn1.OBJECT_IDENTIFIER) || !seq.ReadASN1Element(&alg, casn1.SEQUENCE) {
		t.Fatal("cannot split the encrypted content info")
	}
	p.contentAlg = alg
	return p
}

// build assembles a ContentInfo of EnvelopedData from raw elements.
func build(elems ...[]byte) []byte {
	var b cryptobyte.Builder
	b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oidEnvelopedData)
		b.AddASN1(casn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
				for _, e := range elems {
					b.AddBytes(e)
				}
			})
		})
	})
	return b.BytesOrPanic()
}

func element(tag casn1.Tag, content ...[]byte) []byte {
	var b cryptobyte.Builder
	b.AddASN1(tag, func(b *cryptobyte.Builder) {
		for _, c := range content {
			b.AddBytes(c)
		}
	})
	return b.BytesOrPanic()
}

// eciWith is an EncryptedContentInfo for id-data with alg and ciphertext.
func eciWith(alg, ciphertext []byte) []byte {
	var oid cryptobyte.Builder
	oid.AddASN1ObjectIdentifier(oidData)
	return element(casn1.SEQUENCE, oid.BytesOrPanic(), alg, element(casn1.Tag(0).ContextSpecific(), ciphertext))
}

// TestIsEnvelope: real envelopes pass; text in clear beside the
// ciphertext, where decryption passes over it, or inside it after the
// first 64 KiB, does not. Before the fix each leak case was "already
// encrypted" and sent as it is under `required`.
func TestIsEnvelope(t *testing.T) {
	id, _ := fuzzIdentity(t)
	der, err := Encrypt([]byte(secretText), []*x509.Certificate{id.Cert})
	if err != nil {
		t.Fatal(err)
	}
	p := splitEnvelope(t, der)
	text := element(casn1.OCTET_STRING, []byte(strings.Repeat(secretText, 4)))
	attr := func(tag casn1.Tag) []byte {
		var oid cryptobyte.Builder
		oid.AddASN1ObjectIdentifier(asn1.ObjectIdentifier{1, 2, 3, 4})
		return element(tag, element(casn1.SEQUENCE, oid.BytesOrPanic(), element(casn1.SET, text)))
	}
	ris := func(extra ...[]byte) []byte { return element(casn1.SET, append([][]byte{p.ktri}, extra...)...) }
	random := make([]byte, 64<<10+4096)
	rand.Read(random)
	late := append(bytes.Clone(random[:64<<10]), strings.Repeat(secretText+"\r\n", 40)...)
	// A key transport recipient whose "encrypted key" is text: the same
	// recipient with its last element (the encrypted key) replaced.
	ktri := cryptobyte.String(p.ktri)
	var ktriBody, kv, rid, kalg cryptobyte.String
	var ridTag casn1.Tag
	if !ktri.ReadASN1(&ktriBody, casn1.SEQUENCE) || !ktriBody.ReadASN1Element(&kv, casn1.INTEGER) ||
		!ktriBody.ReadAnyASN1Element(&rid, &ridTag) || !ktriBody.ReadASN1Element(&kalg, casn1.SEQUENCE) {
		t.Fatal("cannot split the recipient")
	}
	textKey := element(casn1.SEQUENCE, kv, rid, kalg, text)
	bigKey := element(casn1.SEQUENCE, kv, rid, kalg, element(casn1.OCTET_STRING, random[:4096]))

	for _, tc := range []struct {
		name string
		der  []byte
		want bool
	}{
		{"Encrypt", der, true},
		{"rebuilt", build(p.version, p.ris, p.eci), true},
		{"random ciphertext past 64 KiB", build(p.version, p.ris, eciWith(p.contentAlg, random)), true},
		{"key agreement recipient", build(p.version, ris(element(casn1.Tag(1).Constructed().ContextSpecific(), element(casn1.OCTET_STRING, random[:300]))), p.eci), true},

		{"unprotectedAttrs", build(p.version, p.ris, p.eci, attr(casn1.Tag(1).Constructed().ContextSpecific())), false},
		{"originatorInfo", build(p.version, element(casn1.Tag(0).Constructed().ContextSpecific(), text), p.ris, p.eci), false},
		{"other recipient info", build(p.version, ris(element(casn1.Tag(4).Constructed().ContextSpecific(), text)), p.eci), false},
		{"password recipient info", build(p.version, ris(element(casn1.Tag(3).Constructed().ContextSpecific(), text)), p.eci), false},
		{"key agreement recipient over 1 KiB", build(p.version, ris(element(casn1.Tag(1).Constructed().ContextSpecific(), element(casn1.OCTET_STRING, random[:2000]))), p.eci), false},
		{"encrypted key that is text", build(p.version, element(casn1.SET, textKey), p.eci), false},
		{"encrypted key over 2 KiB", build(p.version, element(casn1.SET, bigKey), p.eci), false},
		{"ciphertext with text after 64 KiB", build(p.version, p.ris, eciWith(p.contentAlg, late)), false},
		{"long content algorithm parameters", build(p.version, p.ris, eciWith(element(casn1.SEQUENCE, p.contentAlg[2:2+11], element(casn1.OCTET_STRING, text)), random[:4096])), false},
		{"no recipient", build(p.version, element(casn1.SET), p.eci), false},
		{"trailing data", append(bytes.Clone(der), 0x04, 0x01, 'x'), false},
	} {
		if got := IsEnvelope(tc.der); got != tc.want {
			t.Errorf("%s: IsEnvelope = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestIsEnvelopeOpenSSL: what openssl cms makes (the FuzzDecrypt seeds:
// AES-CBC, AES-GCM AuthEnvelopedData, RSA-OAEP) passes.
func TestIsEnvelopeOpenSSL(t *testing.T) {
	for _, n := range []string{"d1", "d2", "d3", "d4"} {
		v := readSeed(t, filepath.Join("testdata", "fuzz", "FuzzDecrypt", n))
		if !IsEnvelope(v[0]) {
			t.Errorf("FuzzDecrypt/%s: not an envelope", n)
		}
	}
}

// TestIsEnvelopeCorpus: what Thunderbird sends passes.
func TestIsEnvelopeCorpus(t *testing.T) {
	dir := corpusDir(t)
	files, _ := filepath.Glob(filepath.Join(dir, "*.env.eml"))
	if len(files) == 0 {
		t.Fatalf("no *.env.eml in %s", dir)
	}
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		e := parseEntity(t, raw)
		if mt, _ := e.mediaType(t); mt != "application/pkcs7-mime" {
			continue
		}
		if !IsEnvelope(e.base64Body(t)) {
			t.Errorf("%s: not an envelope", filepath.Base(file))
		}
	}
}
