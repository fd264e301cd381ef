package smime

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/smallstep/pkcs7"
	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// SignDetached returns a DER CMS SignedData without encapsulated content:
// a detached signature over content (the exact CRLF-canonical bytes of the
// entity to be signed), for an application/pkcs7-signature part with
// micalg=sha-256. The digest is SHA-256; the signed attributes are
// content-type, messageDigest and signingTime; the signer's certificate and
// chain (its issuer first, no root needed) are included. signer.Key is an
// *rsa.PrivateKey (PKCS#1 v1.5) or *ecdsa.PrivateKey.
//
// It uses github.com/smallstep/pkcs7 with the digest set on the object,
// never through the library's package-level defaults.
func SignDetached(content []byte, signer Identity, chain []*x509.Certificate) ([]byte, error) {
	if signer.Cert == nil || signer.Key == nil {
		return nil, errors.New("smime: sign: no signing identity")
	}
	sd, err := pkcs7.NewSignedData(content)
	if err != nil {
		return nil, fmt.Errorf("smime: sign: %w", err)
	}
	sd.SetDigestAlgorithm(pkcs7.OIDDigestAlgorithmSHA256)
	if err := sd.AddSignerChain(signer.Cert, signer.Key, chain, pkcs7.SignerInfoConfig{}); err != nil {
		return nil, fmt.Errorf("smime: sign: %w", err)
	}
	sd.Detach()
	out, err := sd.Finish()
	if err != nil {
		return nil, fmt.Errorf("smime: sign: %w", err)
	}
	return out, nil
}

// Encrypt returns a DER CMS EnvelopedData of content for recipients:
// AES-256-CBC content encryption, the key transported to each recipient
// with RSA PKCS#1 v1.5 and the recipient named by issuer and serial number
// (what every client reads). Every recipient certificate must hold an RSA
// key; checking that a certificate is usable (time, EKU) is the caller's
// job.
//
// Written with cryptobyte rather than smallstep/pkcs7.Encrypt, which takes
// its algorithms from package-level variables (DES by default) that any
// other user of the library in the process could change.
func Encrypt(content []byte, recipients []*x509.Certificate) ([]byte, error) {
	if len(recipients) == 0 {
		return nil, errors.New("smime: encrypt: no recipients")
	}
	key := make([]byte, 32)
	iv := make([]byte, aes.BlockSize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("smime: encrypt: %w", err)
	}
	if _, err := rand.Read(iv); err != nil {
		return nil, fmt.Errorf("smime: encrypt: %w", err)
	}
	type ktri struct {
		cert *x509.Certificate
		ek   []byte
	}
	ris := make([]ktri, 0, len(recipients))
	for i, cert := range recipients {
		pub, ok := cert.PublicKey.(*rsa.PublicKey)
		if !ok {
			return nil, fmt.Errorf("smime: encrypt: recipient %d (serial %s): not an RSA key", i, formatSerial(cert.SerialNumber))
		}
		//lint:ignore SA1019 PKCS#1 v1.5 key transport is what every S/MIME client reads.
		ek, err := rsa.EncryptPKCS1v15(rand.Reader, pub, key)
		if err != nil {
			return nil, fmt.Errorf("smime: encrypt: recipient %d: %w", i, err)
		}
		ris = append(ris, ktri{cert, ek})
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("smime: encrypt: %w", err)
	}
	n := aes.BlockSize - len(content)%aes.BlockSize
	ct := make([]byte, len(content)+n)
	copy(ct, content)
	for i := len(content); i < len(ct); i++ {
		ct[i] = byte(n)
	}
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(ct, ct)

	var b cryptobyte.Builder
	b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) { // ContentInfo
		b.AddASN1ObjectIdentifier(oidEnvelopedData)
		b.AddASN1(casn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) { // EnvelopedData
				b.AddASN1Int64(0)
				b.AddASN1(casn1.SET, func(b *cryptobyte.Builder) {
					for _, r := range ris {
						b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) { // KeyTransRecipientInfo
							b.AddASN1Int64(0)
							b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
								b.AddBytes(r.cert.RawIssuer)
								b.AddASN1BigInt(r.cert.SerialNumber)
							})
							b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
								b.AddASN1ObjectIdentifier(oidRSAEncryption)
								b.AddASN1NULL()
							})
							b.AddASN1OctetString(r.ek)
						})
					}
				})
				b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) { // EncryptedContentInfo
					b.AddASN1ObjectIdentifier(oidData)
					b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddASN1ObjectIdentifier(oidAES256CBC)
						b.AddASN1OctetString(iv)
					})
					b.AddASN1(casn1.Tag(0).ContextSpecific(), func(b *cryptobyte.Builder) {
						b.AddBytes(ct)
					})
				})
			})
		})
	})
	out, err := b.Bytes()
	if err != nil {
		return nil, fmt.Errorf("smime: encrypt: %w", err)
	}
	return out, nil
}
