package smime

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"strings"
	"testing"

	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// TestIsEnvelopeBoundsClearElements (found by review): elements outside
// the content that IsEnvelope did not bound (a NULL parameter with
// content, many key agreement recipient infos, text in OID arcs, a huge
// issuer name, a long AuthEnvelopedData mac...), each carrying plaintext
// in clear next to real ciphertext, no longer count as already encrypted.
func TestIsEnvelopeBoundsClearElements(t *testing.T) {
	id, _ := fuzzIdentity(t)
	der, err := Encrypt([]byte(secretText), []*x509.Certificate{id.Cert})
	if err != nil {
		t.Fatal(err)
	}
	p := splitEnvelope(t, der)
	big := []byte(strings.Repeat(secretText+"\r\n", 1500)) // ~90 KB of text
	random := make([]byte, 4096)
	rand.Read(random)

	// 1. A NULL "parameter" with content: readAlgorithmIdentifier drops
	// NULL params (a.params = nil), so maxAlgParams sees 0 bytes.
	var oidB cryptobyte.Builder
	oidB.AddASN1ObjectIdentifier(oidAES256CBC)
	nullAlg := element(casn1.SEQUENCE, oidB.BytesOrPanic(), element(casn1.NULL, big))
	nullParams := build(p.version, p.ris, eciWith(nullAlg, random))

	// 2. Many key agreement recipient infos, each under 1 KiB, of text.
	ris := [][]byte{p.ktri}
	chunk := []byte(strings.Repeat(secretText, 15)) // ~900 bytes
	for i := 0; i < 100; i++ {
		ris = append(ris, element(casn1.Tag(1).Constructed().ContextSpecific(), element(casn1.OCTET_STRING, chunk)))
	}
	manyKARI := build(p.version, element(casn1.SET, ris...), p.eci)

	// 3. The content type OID carries text in its arcs.
	var arcs asn1.ObjectIdentifier = asn1.ObjectIdentifier{1, 2}
	for _, c := range []byte(strings.Repeat(secretText, 100)) {
		arcs = append(arcs, int(c))
	}
	var ctB cryptobyte.Builder
	ctB.AddASN1ObjectIdentifier(arcs)
	oidECI := element(casn1.SEQUENCE, ctB.BytesOrPanic(), p.contentAlg, element(casn1.Tag(0).ContextSpecific(), random))
	oidLeak := build(p.version, p.ris, oidECI)

	// 4. The recipient's issuer name is ~90 KB of text (a key identifier
	// works the same way).
	ktri := cryptobyte.String(p.ktri)
	var body, kv, rid, kalg, ek cryptobyte.String
	var ridTag casn1.Tag
	if !ktri.ReadASN1(&body, casn1.SEQUENCE) || !body.ReadASN1Element(&kv, casn1.INTEGER) ||
		!body.ReadAnyASN1Element(&rid, &ridTag) || !body.ReadASN1Element(&kalg, casn1.SEQUENCE) || !body.ReadASN1Element(&ek, casn1.OCTET_STRING) {
		t.Fatal("split")
	}
	skiRid := element(casn1.Tag(0).ContextSpecific(), big)
	skiLeak := build(p.version, element(casn1.SET, element(casn1.SEQUENCE, kv, skiRid, kalg, ek)), p.eci)

	// 5. Many key transport recipients whose "encrypted keys" are 63
	// bytes of text each (under 64 bytes LooksRandom says yes).
	var kts [][]byte
	for i := 0; i < 200; i++ {
		kts = append(kts, element(casn1.SEQUENCE, kv, rid, kalg, element(casn1.OCTET_STRING, []byte(secretText[:58]+"-----"))))
	}
	shortKeys := build(p.version, element(casn1.SET, kts...), p.eci)

	for _, tc := range []struct {
		name string
		der  []byte
	}{
		{"200 recipients with 63-byte text keys", shortKeys},
		{"NULL alg params with 90 KB of text", nullParams},
		{"100 KARIs of 900 bytes of text each", manyKARI},
		{"content type OID of text", oidLeak},
		{"subjectKeyIdentifier of 90 KB of text", skiLeak},
		{"AuthEnvelopedData mac of 90 KB of text", authWithMac(t, big)},
	} {
		if IsEnvelope(tc.der) {
			t.Errorf("LEAK: %s: IsEnvelope = true (%d bytes)", tc.name, len(tc.der))
		}
	}
}

// authWithMac is an AuthEnvelopedData with random content whose mac is mac.
func authWithMac(t *testing.T, mac []byte) []byte {
	id, _ := fuzzIdentity(t)
	der, err := Encrypt([]byte(secretText), []*x509.Certificate{id.Cert})
	if err != nil {
		t.Fatal(err)
	}
	p := splitEnvelope(t, der)
	nonce := make([]byte, 12)
	ct := make([]byte, 4096)
	rand.Read(nonce)
	rand.Read(ct)
	var b cryptobyte.Builder
	b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oidAuthEnvelopedData)
		b.AddASN1(casn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1Int64(0)
				b.AddBytes(p.ris)
				b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1ObjectIdentifier(oidData)
					b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddASN1ObjectIdentifier(oidAES128GCM)
						b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddASN1OctetString(nonce) })
					})
					b.AddASN1(casn1.Tag(0).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(ct) })
				})
				b.AddASN1OctetString(mac)
			})
		})
	})
	return b.BytesOrPanic()
}
