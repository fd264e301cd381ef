package smime

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"
)

var oidECDSAWithSHA256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}

// SignDetached returns a DER CMS SignedData without encapsulated content:
// a detached signature over content. It is SignDetachedReader over a
// byte slice.
func SignDetached(content []byte, signer Identity, chain []*x509.Certificate) ([]byte, error) {
	return SignDetachedReader(bytes.NewReader(content), signer, chain)
}

// SignDetachedReader returns a DER CMS SignedData without encapsulated
// content: a detached signature over the bytes read from content (the
// exact CRLF-canonical entity to be signed), for an
// application/pkcs7-signature part with micalg=sha-256. The content is
// hashed (SHA-256) as it is read and never held in memory. The signed
// attributes are content-type (id-data), messageDigest and signingTime;
// the signer's certificate and chain (its issuer first, no root needed)
// are included. signer.Key is an *rsa.PrivateKey (PKCS#1 v1.5) or an
// *ecdsa.PrivateKey (ecdsa-with-SHA256).
//
// It is written with cryptobyte rather than github.com/smallstep/pkcs7,
// whose NewSignedData needs the whole content in memory.
func SignDetachedReader(content io.Reader, signer Identity, chain []*x509.Certificate) ([]byte, error) {
	if signer.Cert == nil || signer.Key == nil {
		return nil, errors.New("smime: sign: no signing identity")
	}
	var sigAlg asn1.ObjectIdentifier
	switch signer.Key.(type) {
	case *rsa.PrivateKey:
		sigAlg = oidRSAEncryption
	case *ecdsa.PrivateKey:
		sigAlg = oidECDSAWithSHA256
	default:
		return nil, fmt.Errorf("smime: sign: unsupported key type %T", signer.Key)
	}
	h := sha256.New()
	bp := cbcBufs.Get().(*[]byte)
	_, cerr := io.CopyBuffer(h, content, *bp)
	cbcBufs.Put(bp)
	if err := cerr; err != nil {
		return nil, fmt.Errorf("smime: sign: reading content: %w", err)
	}
	md := h.Sum(nil)

	// The signed attributes, DER-sorted as a SET OF requires.
	attr := func(oid asn1.ObjectIdentifier, value func(*cryptobyte.Builder)) []byte {
		var b cryptobyte.Builder
		b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(oid)
			b.AddASN1(casn1.SET, value)
		})
		return b.BytesOrPanic()
	}
	var timeAttr []byte
	{
		var b cryptobyte.Builder
		b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(oidAttrSigningTime)
			b.AddASN1(casn1.SET, func(b *cryptobyte.Builder) {
				now := time.Now().UTC().Truncate(time.Second)
				if now.Year() >= 1950 && now.Year() < 2050 {
					b.AddASN1UTCTime(now)
				} else {
					b.AddASN1GeneralizedTime(now)
				}
			})
		})
		var err error
		if timeAttr, err = b.Bytes(); err != nil {
			return nil, fmt.Errorf("smime: sign: %w", err)
		}
	}
	attrs := [][]byte{
		attr(oidAttrContentType, func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(oidData) }),
		attr(oidAttrMessageDigest, func(b *cryptobyte.Builder) { b.AddASN1OctetString(md) }),
		timeAttr,
	}
	slices.SortFunc(attrs, bytes.Compare)
	var sb cryptobyte.Builder
	sb.AddASN1(casn1.SET, func(b *cryptobyte.Builder) {
		for _, a := range attrs {
			b.AddBytes(a)
		}
	})
	signedAttrs := sb.BytesOrPanic()
	// The signature covers the attributes' SET OF encoding (RFC 5652 5.4);
	// the SignerInfo carries the same content under [0] IMPLICIT.
	digest := sha256.Sum256(signedAttrs)
	var sig []byte
	var err error
	switch k := signer.Key.(type) {
	case *rsa.PrivateKey:
		sig, err = rsa.SignPKCS1v15(nil, k, crypto.SHA256, digest[:])
	case *ecdsa.PrivateKey:
		sig, err = ecdsa.SignASN1(rand.Reader, k, digest[:])
	}
	if err != nil {
		return nil, fmt.Errorf("smime: sign: %w", err)
	}
	attrBody := cryptobyte.String(signedAttrs)
	var attrContent cryptobyte.String
	if !attrBody.ReadASN1(&attrContent, casn1.SET) {
		return nil, errors.New("smime: sign: internal error: signed attributes")
	}

	sha256Alg := func(b *cryptobyte.Builder) {
		b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(oidSHA256)
		})
	}
	var b cryptobyte.Builder
	b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) { // ContentInfo
		b.AddASN1ObjectIdentifier(oidSignedData)
		b.AddASN1(casn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) { // SignedData
				b.AddASN1Int64(1)
				b.AddASN1(casn1.SET, sha256Alg)
				b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) { // EncapsulatedContentInfo, detached
					b.AddASN1ObjectIdentifier(oidData)
				})
				b.AddASN1(casn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
					b.AddBytes(signer.Cert.Raw)
					for _, c := range chain {
						if c != nil {
							b.AddBytes(c.Raw)
						}
					}
				})
				b.AddASN1(casn1.SET, func(b *cryptobyte.Builder) {
					b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) { // SignerInfo
						b.AddASN1Int64(1)
						b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) { // IssuerAndSerialNumber
							b.AddBytes(signer.Cert.RawIssuer)
							b.AddASN1BigInt(signer.Cert.SerialNumber)
						})
						sha256Alg(b)
						b.AddASN1(casn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
							b.AddBytes(attrContent)
						})
						b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
							b.AddASN1ObjectIdentifier(sigAlg)
							if sigAlg.Equal(oidRSAEncryption) {
								b.AddASN1NULL()
							}
						})
						b.AddASN1OctetString(sig)
					})
				})
			})
		})
	})
	out, err := b.Bytes()
	if err != nil {
		return nil, fmt.Errorf("smime: sign: %w", err)
	}
	return out, nil
}

// Encrypt returns a DER CMS EnvelopedData of content for recipients. It is
// EncryptTo over a byte slice.
func Encrypt(content []byte, recipients []*x509.Certificate) ([]byte, error) {
	var out bytes.Buffer
	if err := EncryptTo(&out, bytes.NewReader(content), int64(len(content)), recipients); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// ErrSizeMismatch is returned by EncryptTo when content does not hold
// exactly size bytes; what was written to w is then unusable.
var ErrSizeMismatch = errors.New("smime: encrypt: content size differs from the announced size")

// EncryptTo writes to w a DER CMS EnvelopedData of the size bytes read
// from content, for recipients: AES-256-CBC content encryption, the key
// transported to each recipient with RSA PKCS#1 v1.5 and the recipient
// named by issuer and serial number (what every client reads). The
// content is encrypted as it is read, in constant memory: the DER lengths
// are computed in advance from size (the padded ciphertext is
// size + 16 - size%16 bytes). Every recipient certificate must hold an
// RSA key; checking that a certificate is usable (time, EKU) is the
// caller's job.
//
// Written with cryptobyte rather than smallstep/pkcs7.Encrypt, which takes
// its algorithms from package-level variables (DES by default) that any
// other user of the library in the process could change, and needs the
// whole content in memory.
func EncryptTo(w io.Writer, content io.Reader, size int64, recipients []*x509.Certificate) error {
	if len(recipients) == 0 {
		return errors.New("smime: encrypt: no recipients")
	}
	if size < 0 {
		return errors.New("smime: encrypt: negative size")
	}
	key := make([]byte, 32)
	iv := make([]byte, aes.BlockSize)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("smime: encrypt: %w", err)
	}
	if _, err := rand.Read(iv); err != nil {
		return fmt.Errorf("smime: encrypt: %w", err)
	}
	ris := make([]keyTransport, 0, len(recipients))
	for i, cert := range recipients {
		pub, ok := cert.PublicKey.(*rsa.PublicKey)
		if !ok {
			return fmt.Errorf("smime: encrypt: recipient %d (serial %s): not an RSA key", i, formatSerial(cert.SerialNumber))
		}
		//lint:ignore SA1019 PKCS#1 v1.5 key transport is what every S/MIME client reads.
		ek, err := rsa.EncryptPKCS1v15(rand.Reader, pub, key)
		if err != nil {
			return fmt.Errorf("smime: encrypt: recipient %d: %w", i, err)
		}
		ris = append(ris, keyTransport{cert, ek})
	}
	return writeEnveloped(w, content, size, ris, key, iv)
}

// keyTransport is one recipient and the content key encrypted to it.
type keyTransport struct {
	cert *x509.Certificate
	ek   []byte
}

// writeEnveloped writes the EnvelopedData for the given content key, IV
// and key-transport recipients (split from EncryptTo so that tests can
// compare its output with an all-in-memory encoding).
func writeEnveloped(w io.Writer, content io.Reader, size int64, ris []keyTransport, key, iv []byte) error {
	block, err := aes.NewCipher(key)
	if err != nil {
		return fmt.Errorf("smime: encrypt: %w", err)
	}
	// Everything in front of the ciphertext except the enclosing
	// headers is small and built with cryptobyte.
	var rb cryptobyte.Builder
	rb.AddASN1Int64(0) // EnvelopedData version
	rb.AddASN1(casn1.SET, func(b *cryptobyte.Builder) {
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
	recips, err := rb.Bytes()
	if err != nil {
		return fmt.Errorf("smime: encrypt: %w", err)
	}
	var eb cryptobyte.Builder
	eb.AddASN1ObjectIdentifier(oidData)
	eb.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oidAES256CBC)
		b.AddASN1OctetString(iv)
	})
	eciHead, err := eb.Bytes()
	if err != nil {
		return fmt.Errorf("smime: encrypt: %w", err)
	}
	var cib cryptobyte.Builder
	cib.AddASN1ObjectIdentifier(oidEnvelopedData)
	ciOID := cib.BytesOrPanic()

	ctLen := size + aes.BlockSize - size%aes.BlockSize
	ctHdr := derHeader(0x80, ctLen) // encryptedContent [0] IMPLICIT OCTET STRING
	eciLen := int64(len(eciHead)+len(ctHdr)) + ctLen
	eciHdr := derHeader(0x30, eciLen)
	edLen := int64(len(recips)+len(eciHdr)) + eciLen
	edHdr := derHeader(0x30, edLen)
	expLen := int64(len(edHdr)) + edLen
	expHdr := derHeader(0xa0, expLen)
	ciLen := int64(len(ciOID)+len(expHdr)) + expLen
	ciHdr := derHeader(0x30, ciLen)

	var head []byte
	for _, p := range [][]byte{ciHdr, ciOID, expHdr, edHdr, recips, eciHdr, eciHead, ctHdr} {
		head = append(head, p...)
	}
	if _, err := w.Write(head); err != nil {
		return fmt.Errorf("smime: encrypt: %w", err)
	}

	cbc := cipher.NewCBCEncrypter(block, iv)
	// The buffer holds only ciphertext once a round is done (every byte
	// read is encrypted in place), so it can go back to the pool.
	bp := cbcBufs.Get().(*[]byte)
	defer cbcBufs.Put(bp)
	buf := *bp
	var total int64
	for {
		n, rerr := io.ReadFull(content, buf)
		total += int64(n)
		if total > size {
			return ErrSizeMismatch
		}
		if rerr == nil {
			cbc.CryptBlocks(buf, buf)
			if _, err := w.Write(buf); err != nil {
				return fmt.Errorf("smime: encrypt: %w", err)
			}
			continue
		}
		if rerr != io.EOF && rerr != io.ErrUnexpectedEOF {
			return fmt.Errorf("smime: encrypt: reading content: %w", rerr)
		}
		if total != size {
			return ErrSizeMismatch
		}
		// The last, padded blocks (PKCS#7 padding, RFC 5652 6.3).
		full := n - n%aes.BlockSize
		pad := aes.BlockSize - n%aes.BlockSize
		last := buf[:full+aes.BlockSize]
		for i := n; i < len(last); i++ {
			last[i] = byte(pad)
		}
		cbc.CryptBlocks(last, last)
		if _, err := w.Write(last); err != nil {
			return fmt.Errorf("smime: encrypt: %w", err)
		}
		return nil
	}
}

// cbcBufs holds the 64 KiB buffers (a multiple of the AES block size) of
// encryption and hashing, reused across messages.
var cbcBufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// derHeader returns a DER identifier and definite length for a content of
// n bytes.
func derHeader(tag byte, n int64) []byte {
	if n < 0x80 {
		return []byte{tag, byte(n)}
	}
	var l []byte
	for v := n; v > 0; v >>= 8 {
		l = append([]byte{byte(v)}, l...)
	}
	return append([]byte{tag, 0x80 | byte(len(l))}, l...)
}
