package pkcs12

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"hash"
	"unicode/utf16"

	gocrypto "crypto"

	"github.com/cryptmilter/cryptmilter/internal/ber"
)

// The BER reader, for what go-pkcs12 refuses: BER encoding at every layer,
// as NSS (Thunderbird, Firefox) writes it. It supports the password MAC
// (PKCS#12 KDF, SHA-1/SHA-2), PBES2 (PBKDF2 with AES-CBC or 3DES-CBC) and
// pbeWithSHAAnd3-KeyTripleDES-CBC.

var (
	oidData           = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidEncryptedData  = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 6}
	oidKeyBag         = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 10, 1, 1}
	oidShroudedKeyBag = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 10, 1, 2}
	oidCertBag        = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 10, 1, 3}
	oidCertTypeX509   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 22, 1}
	oidPBES2          = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 13}
	oidPBKDF2         = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 12}
	oidPBE3DES        = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 1, 3}
	oidHMACSHA1       = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 7}
	oidHMACSHA256     = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 9}
	oidHMACSHA384     = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 10}
	oidHMACSHA512     = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 11}
	oidSHA1           = asn1.ObjectIdentifier{1, 3, 14, 3, 2, 26}
	oidSHA256         = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	oidSHA384         = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 2}
	oidSHA512         = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 3}
	oidAES128CBC      = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 2}
	oidAES192CBC      = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 22}
	oidAES256CBC      = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}
	oidDESEDE3CBC     = asn1.ObjectIdentifier{1, 2, 840, 113549, 3, 7}
	errUnsupported    = errors.New("unsupported PKCS#12 algorithm")
	maxP12Iterations  = 10_000_000
)

type p12ContentInfo struct {
	ContentType asn1.ObjectIdentifier
	Content     asn1.RawValue `asn1:"tag:0,explicit,optional"`
}

type p12PFX struct {
	Version  int
	AuthSafe p12ContentInfo
	MacData  p12MacData `asn1:"optional"`
}

type p12DigestInfo struct {
	Algorithm pkixAlgorithm
	Digest    []byte
}

type p12MacData struct {
	Mac        p12DigestInfo
	MacSalt    []byte
	Iterations int `asn1:"optional,default:1"`
}

type pkixAlgorithm struct {
	Algorithm  asn1.ObjectIdentifier
	Parameters asn1.RawValue `asn1:"optional"`
}

type p12EncryptedData struct {
	Version              int
	EncryptedContentInfo struct {
		ContentType                asn1.ObjectIdentifier
		ContentEncryptionAlgorithm pkixAlgorithm
		EncryptedContent           asn1.RawValue `asn1:"tag:0,optional"`
	}
}

type p12SafeBag struct {
	ID         asn1.ObjectIdentifier
	Value      asn1.RawValue `asn1:"tag:0,explicit"`
	Attributes asn1.RawValue `asn1:"optional"`
}

type p12CertBag struct {
	ID   asn1.ObjectIdentifier
	Data []byte `asn1:"tag:0,explicit"`
}

type encryptedPrivateKeyInfo struct {
	Algorithm pkixAlgorithm
	Data      []byte
}

type pbes2Params struct {
	KDF pkixAlgorithm
	Enc pkixAlgorithm
}

type pbkdf2Params struct {
	Salt       []byte
	Iterations int
	KeyLength  int           `asn1:"optional"`
	PRF        pkixAlgorithm `asn1:"optional"`
}

type pbeParams struct {
	Salt       []byte
	Iterations int
}

// unmarshalBER converts BER to DER and unmarshals it, requiring that
// nothing follows.
func unmarshalBER(in []byte, v any) error {
	der, err := ber.ToDER(in)
	if err != nil {
		return err
	}
	rest, err := asn1.Unmarshal(der, v)
	if err != nil {
		return err
	}
	if len(rest) != 0 {
		return errors.New("trailing data")
	}
	return nil
}

func bmpPassword(pw []byte) []byte {
	u := utf16.Encode([]rune(string(pw)))
	out := make([]byte, 0, 2*len(u)+2)
	for _, c := range u {
		out = append(out, byte(c>>8), byte(c))
	}
	return append(out, 0, 0)
}

// pkcs12KDF is the key derivation of RFC 7292 appendix B.2.
func pkcs12KDF(newHash func() hash.Hash, v int, password, salt []byte, id byte, iterations, size int) []byte {
	h := newHash()
	u := h.Size()
	fill := func(s []byte) []byte {
		if len(s) == 0 {
			return nil
		}
		n := v * ((len(s) + v - 1) / v)
		out := make([]byte, n)
		for i := range out {
			out[i] = s[i%len(s)]
		}
		return out
	}
	D := make([]byte, v)
	for i := range D {
		D[i] = id
	}
	I := append(fill(salt), fill(password)...)
	var out []byte
	for len(out) < size {
		h.Reset()
		h.Write(D)
		h.Write(I)
		A := h.Sum(nil)
		for r := 1; r < iterations; r++ {
			h.Reset()
			h.Write(A)
			A = h.Sum(A[:0])
		}
		out = append(out, A...)
		if len(out) >= size {
			break
		}
		B := make([]byte, v)
		for i := range B {
			B[i] = A[i%u]
		}
		for j := 0; j < len(I); j += v {
			carry := 1
			for k := v - 1; k >= 0; k-- {
				s := int(I[j+k]) + int(B[k]) + carry
				I[j+k] = byte(s)
				carry = s >> 8
			}
		}
	}
	return out[:size]
}

func hashForOID(oid asn1.ObjectIdentifier) (func() hash.Hash, int, error) {
	switch {
	case oid.Equal(oidSHA1), oid.Equal(oidHMACSHA1):
		return sha1.New, 64, nil
	case oid.Equal(oidSHA256), oid.Equal(oidHMACSHA256):
		return sha256.New, 64, nil
	case oid.Equal(oidSHA384), oid.Equal(oidHMACSHA384):
		return sha512.New384, 128, nil
	case oid.Equal(oidSHA512), oid.Equal(oidHMACSHA512):
		return sha512.New, 128, nil
	}
	return nil, 0, fmt.Errorf("%w: digest %v", errUnsupported, oid)
}

// decrypt decrypts data encrypted with a PBES2 or PKCS#12 3DES scheme.
func decrypt(alg pkixAlgorithm, data, password []byte) ([]byte, error) {
	var block cipher.Block
	var iv []byte
	switch {
	case alg.Algorithm.Equal(oidPBES2):
		var p pbes2Params
		if err := unmarshalBER(alg.Parameters.FullBytes, &p); err != nil {
			return nil, fmt.Errorf("pbes2 parameters: %w", err)
		}
		if !p.KDF.Algorithm.Equal(oidPBKDF2) {
			return nil, fmt.Errorf("%w: kdf %v", errUnsupported, p.KDF.Algorithm)
		}
		var kp pbkdf2Params
		if err := unmarshalBER(p.KDF.Parameters.FullBytes, &kp); err != nil {
			return nil, fmt.Errorf("pbkdf2 parameters: %w", err)
		}
		if kp.Iterations < 1 || kp.Iterations > maxP12Iterations {
			return nil, errors.New("pbkdf2: bad iteration count")
		}
		prf := sha1.New
		if len(kp.PRF.Algorithm) > 0 {
			var err error
			if prf, _, err = hashForOID(kp.PRF.Algorithm); err != nil {
				return nil, err
			}
		}
		var keyLen int
		switch {
		case p.Enc.Algorithm.Equal(oidAES128CBC):
			keyLen = 16
		case p.Enc.Algorithm.Equal(oidAES192CBC):
			keyLen = 24
		case p.Enc.Algorithm.Equal(oidAES256CBC):
			keyLen = 32
		case p.Enc.Algorithm.Equal(oidDESEDE3CBC):
			keyLen = 24
		default:
			return nil, fmt.Errorf("%w: cipher %v", errUnsupported, p.Enc.Algorithm)
		}
		if _, err := asn1.Unmarshal(p.Enc.Parameters.FullBytes, &iv); err != nil {
			return nil, fmt.Errorf("cipher iv: %w", err)
		}
		key, err := pbkdf2.Key(prf, string(password), kp.Salt, kp.Iterations, keyLen)
		if err != nil {
			return nil, err
		}
		if p.Enc.Algorithm.Equal(oidDESEDE3CBC) {
			block, err = des.NewTripleDESCipher(key)
		} else {
			block, err = aes.NewCipher(key)
		}
		if err != nil {
			return nil, err
		}
	case alg.Algorithm.Equal(oidPBE3DES):
		var p pbeParams
		if err := unmarshalBER(alg.Parameters.FullBytes, &p); err != nil {
			return nil, fmt.Errorf("pbe parameters: %w", err)
		}
		if p.Iterations < 1 || p.Iterations > maxP12Iterations {
			return nil, errors.New("pbe: bad iteration count")
		}
		bmp := bmpPassword(password)
		key := pkcs12KDF(sha1.New, 64, bmp, p.Salt, 1, p.Iterations, 24)
		iv = pkcs12KDF(sha1.New, 64, bmp, p.Salt, 2, p.Iterations, 8)
		var err error
		if block, err = des.NewTripleDESCipher(key); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("%w: %v", errUnsupported, alg.Algorithm)
	}
	bs := block.BlockSize()
	if len(iv) != bs || len(data) == 0 || len(data)%bs != 0 {
		return nil, errors.New("bad ciphertext length")
	}
	out := make([]byte, len(data))
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(out, data)
	pad := int(out[len(out)-1])
	if pad == 0 || pad > bs {
		return nil, ErrIncorrectPassword
	}
	for _, b := range out[len(out)-pad:] {
		if int(b) != pad {
			return nil, ErrIncorrectPassword
		}
	}
	return out[:len(out)-pad], nil
}

// decodeBER decodes a BER-encoded PKCS#12 file.
func decodeBER(data, password []byte) (gocrypto.Signer, *x509.Certificate, []*x509.Certificate, error) {
	var pfx p12PFX
	if err := unmarshalBER(data, &pfx); err != nil {
		return nil, nil, nil, fmt.Errorf("pkcs12: %w", err)
	}
	if pfx.Version != 3 || !pfx.AuthSafe.ContentType.Equal(oidData) {
		return nil, nil, nil, errors.New("pkcs12: only password-integrity version 3 files are supported")
	}
	var authSafe []byte
	if _, err := asn1.Unmarshal(pfx.AuthSafe.Content.Bytes, &authSafe); err != nil {
		return nil, nil, nil, fmt.Errorf("pkcs12: auth safe: %w", err)
	}
	if len(pfx.MacData.Mac.Algorithm.Algorithm) == 0 {
		return nil, nil, nil, errors.New("pkcs12: no MAC")
	}
	newHash, v, err := hashForOID(pfx.MacData.Mac.Algorithm.Algorithm)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("pkcs12: %w", err)
	}
	if pfx.MacData.Iterations < 1 || pfx.MacData.Iterations > maxP12Iterations {
		return nil, nil, nil, errors.New("pkcs12: bad MAC iteration count")
	}
	macKey := pkcs12KDF(newHash, v, bmpPassword(password), pfx.MacData.MacSalt, 3, pfx.MacData.Iterations, newHash().Size())
	m := hmac.New(newHash, macKey)
	m.Write(authSafe)
	if subtle.ConstantTimeCompare(m.Sum(nil), pfx.MacData.Mac.Digest) != 1 {
		return nil, nil, nil, ErrIncorrectPassword
	}
	var cis []p12ContentInfo
	if err := unmarshalBER(authSafe, &cis); err != nil {
		return nil, nil, nil, fmt.Errorf("pkcs12: auth safe: %w", err)
	}
	var keys []gocrypto.Signer
	var certs []*x509.Certificate
	for _, ci := range cis {
		var safe []byte
		switch {
		case ci.ContentType.Equal(oidData):
			if _, err := asn1.Unmarshal(ci.Content.Bytes, &safe); err != nil {
				return nil, nil, nil, fmt.Errorf("pkcs12: safe contents: %w", err)
			}
		case ci.ContentType.Equal(oidEncryptedData):
			var ed p12EncryptedData
			if _, err := asn1.Unmarshal(ci.Content.Bytes, &ed); err != nil {
				return nil, nil, nil, fmt.Errorf("pkcs12: encrypted data: %w", err)
			}
			ct, err := implicitOctets(ed.EncryptedContentInfo.EncryptedContent)
			if err != nil {
				return nil, nil, nil, fmt.Errorf("pkcs12: encrypted data: %w", err)
			}
			if safe, err = decrypt(ed.EncryptedContentInfo.ContentEncryptionAlgorithm, ct, password); err != nil {
				if errors.Is(err, ErrIncorrectPassword) {
					return nil, nil, nil, err
				}
				return nil, nil, nil, fmt.Errorf("pkcs12: %w", err)
			}
		default:
			return nil, nil, nil, fmt.Errorf("pkcs12: %w: content %v", errUnsupported, ci.ContentType)
		}
		var bags []p12SafeBag
		if err := unmarshalBER(safe, &bags); err != nil {
			return nil, nil, nil, fmt.Errorf("pkcs12: safe bags: %w", err)
		}
		for _, b := range bags {
			switch {
			case b.ID.Equal(oidCertBag):
				var cb p12CertBag
				if _, err := asn1.Unmarshal(b.Value.Bytes, &cb); err != nil {
					return nil, nil, nil, fmt.Errorf("pkcs12: cert bag: %w", err)
				}
				if !cb.ID.Equal(oidCertTypeX509) {
					continue
				}
				c, err := x509.ParseCertificate(cb.Data)
				if err != nil {
					return nil, nil, nil, fmt.Errorf("pkcs12: certificate: %w", err)
				}
				certs = append(certs, c)
			case b.ID.Equal(oidShroudedKeyBag), b.ID.Equal(oidKeyBag):
				pk := b.Value.Bytes
				if b.ID.Equal(oidShroudedKeyBag) {
					var epki encryptedPrivateKeyInfo
					if _, err := asn1.Unmarshal(b.Value.Bytes, &epki); err != nil {
						return nil, nil, nil, fmt.Errorf("pkcs12: key bag: %w", err)
					}
					if pk, err = decrypt(epki.Algorithm, epki.Data, password); err != nil {
						if errors.Is(err, ErrIncorrectPassword) {
							return nil, nil, nil, err
						}
						return nil, nil, nil, fmt.Errorf("pkcs12: key: %w", err)
					}
				}
				if pk, err = ber.ToDER(pk); err != nil {
					return nil, nil, nil, fmt.Errorf("pkcs12: key: %w", err)
				}
				k, err := x509.ParsePKCS8PrivateKey(pk)
				if err != nil {
					return nil, nil, nil, fmt.Errorf("pkcs12: key: %w", err)
				}
				s, ok := k.(gocrypto.Signer)
				if !ok {
					return nil, nil, nil, fmt.Errorf("pkcs12: unsupported key type %T", k)
				}
				keys = append(keys, s)
			}
		}
	}
	if len(keys) != 1 {
		return nil, nil, nil, fmt.Errorf("pkcs12: expected one private key, found %d", len(keys))
	}
	var leaf *x509.Certificate
	var chain []*x509.Certificate
	for _, c := range certs {
		if leaf == nil && keyMatchesCert(keys[0], c) {
			leaf = c
		} else {
			chain = append(chain, c)
		}
	}
	if leaf == nil {
		return nil, nil, nil, errors.New("pkcs12: no certificate matches the private key")
	}
	return keys[0], leaf, chain, nil
}

// implicitOctets returns the value of an IMPLICIT OCTET STRING, which BER
// may encode as constructed from OCTET STRING segments.
func implicitOctets(rv asn1.RawValue) ([]byte, error) {
	if !rv.IsCompound {
		return rv.Bytes, nil
	}
	var out []byte
	rest := rv.Bytes
	for len(rest) > 0 {
		var seg []byte
		var err error
		if rest, err = asn1.Unmarshal(rest, &seg); err != nil {
			return nil, err
		}
		out = append(out, seg...)
	}
	return out, nil
}
