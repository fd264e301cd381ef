package smime

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"testing"

	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// buildAuthEnveloped makes an AuthEnvelopedData (AES-128-GCM) by hand, as
// openssl makes none with authAttrs or a key-identifier recipient whose
// certificate lacks the SKI extension. aadAttrs is the authAttrs content
// the tag is computed over; sentAttrs is what goes into the message.
func buildAuthEnveloped(t *testing.T, pub *rsa.PublicKey, ski []byte, aadAttrs, sentAttrs []byte) []byte {
	t.Helper()
	key := make([]byte, 16)
	nonce := make([]byte, 12)
	rand.Read(key)
	rand.Read(nonce)
	//lint:ignore SA1019 test of PKCS#1 v1.5 key transport
	ek, err := rsa.EncryptPKCS1v15(rand.Reader, pub, key)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := aes.NewCipher(key)
	aead, _ := cipher.NewGCM(block)
	var aad []byte
	if aadAttrs != nil {
		var b cryptobyte.Builder
		b.AddASN1(casn1.SET, func(b *cryptobyte.Builder) { b.AddBytes(aadAttrs) })
		aad = b.BytesOrPanic()
	}
	sealed := aead.Seal(nil, nonce, testContent, aad)
	ct, mac := sealed[:len(sealed)-16], sealed[len(sealed)-16:]
	var b cryptobyte.Builder
	b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oidAuthEnvelopedData)
		b.AddASN1(casn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1Int64(0)
				b.AddASN1(casn1.SET, func(b *cryptobyte.Builder) {
					b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddASN1Int64(2)
						b.AddASN1(casn1.Tag(0).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(ski) })
						b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
							b.AddASN1ObjectIdentifier(oidRSAEncryption)
							b.AddASN1NULL()
						})
						b.AddASN1OctetString(ek)
					})
				})
				b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1ObjectIdentifier(oidData)
					b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddASN1ObjectIdentifier(oidAES128GCM)
						b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
							b.AddASN1OctetString(nonce)
							b.AddASN1Int64(16)
						})
					})
					b.AddASN1(casn1.Tag(0).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(ct) })
				})
				if sentAttrs != nil {
					b.AddASN1(casn1.Tag(1).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(sentAttrs) })
				}
				b.AddASN1OctetString(mac)
			})
		})
	})
	return b.BytesOrPanic()
}

// contentTypeAttr is an Attribute { contentType, { oid } }.
func contentTypeAttr(oid []int) []byte {
	var b cryptobyte.Builder
	b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oidAttrContentType)
		b.AddASN1(casn1.SET, func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(oid) })
	})
	return b.BytesOrPanic()
}

func TestDecryptAuthAttrsAndComputedSKI(t *testing.T) {
	p := testPKI(t)
	// subjOnly has no SKI extension: the recipient is named by the
	// RFC 5280 method-1 key identifier.
	if len(p.subjOnly.cert.SubjectKeyId) != 0 {
		t.Fatal("test certificate unexpectedly has an SKI extension")
	}
	pub := p.subjOnly.cert.PublicKey.(*rsa.PublicKey)
	ski := computedSKI(p.subjOnly.cert)
	ids := []Identity{p.alice.identity(), p.subjOnly.identity()}
	attrs := contentTypeAttr(oidData)
	other := contentTypeAttr(oidSignedData)
	tests := []struct {
		name      string
		aad, sent []byte
		want      error
	}{
		{"no-auth-attrs", nil, nil, nil},
		{"auth-attrs", attrs, attrs, nil},
		{"auth-attrs-changed", attrs, other, ErrDecrypt},
		{"auth-attrs-removed", attrs, nil, ErrDecrypt},
		{"auth-attrs-added", nil, attrs, ErrDecrypt},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			der := buildAuthEnveloped(t, pub, ski, tc.aad, tc.sent)
			got, info, err := Decrypt(der, ids)
			if err != tc.want {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if tc.want == nil && (!bytes.Equal(got, testContent) || info.Identity != 1 || !info.Authenticated || info.ContentAlgorithm != "aes-128-gcm") {
				t.Errorf("got %q, %+v", got, info)
			}
		})
	}
}
