// Package pkcs12 implements reading PKCS#12 (PFX) files, as browsers, mail
// clients and OpenSSL export a private key with its certificates, and
// PKCS#8 encrypted private keys.
//
// DER files are read by software.sslmate.com/src/go-pkcs12. That library
// reads DER only (encoding/asn1), and NSS (Thunderbird, Firefox) writes BER
// with indefinite lengths at every layer; those files are read here after
// converting each layer to DER.
package pkcs12

import (
	gocrypto "crypto"
	"crypto/x509"
	"errors"
	"fmt"

	gopkcs12 "software.sslmate.com/src/go-pkcs12"
)

// ErrIncorrectPassword is returned when the file's MAC or encryption does
// not match the password.
var ErrIncorrectPassword = errors.New("pkcs12: wrong passphrase")

// LooksLikePFX reports whether data is plausibly a PKCS#12 PFX: a SEQUENCE
// starting with INTEGER 3. It is a cheap test to choose a parser, not a
// validation.
func LooksLikePFX(data []byte) bool {
	if len(data) < 8 || data[0] != 0x30 {
		return false
	}
	i := 2
	if data[1] > 0x80 {
		i += int(data[1] & 0x7f)
	}
	return i+2 < len(data) && data[i] == 0x02 && data[i+1] == 0x01 && data[i+2] == 0x03
}

// Decode reads a PKCS#12 file (DER, or BER as NSS writes it) holding one
// private key: it returns the key, the certificate that matches it and
// the other certificates.
func Decode(data, password []byte) (gocrypto.Signer, *x509.Certificate, []*x509.Certificate, error) {
	key, leaf, chain, err := gopkcs12.DecodeChain(data, string(password))
	if err != nil {
		if errors.Is(err, gopkcs12.ErrIncorrectPassword) {
			return nil, nil, nil, ErrIncorrectPassword
		}
		// go-pkcs12 needs DER throughout; NSS writes BER.
		return decodeBER(data, password)
	}
	s, ok := key.(gocrypto.Signer)
	if !ok {
		return nil, nil, nil, fmt.Errorf("pkcs12: unsupported key type %T", key)
	}
	return s, leaf, chain, nil
}

// DecryptPrivateKey decrypts a PKCS#8 EncryptedPrivateKeyInfo (the
// content of a PEM "ENCRYPTED PRIVATE KEY" block; PBES2 with PBKDF2 and
// AES-CBC or 3DES-CBC, or pbeWithSHAAnd3-KeyTripleDES-CBC) and parses the
// key. A wrong password gives ErrIncorrectPassword (or, rarely, a key that
// does not parse).
func DecryptPrivateKey(der, password []byte) (gocrypto.Signer, error) {
	var epki encryptedPrivateKeyInfo
	if err := unmarshalBER(der, &epki); err != nil {
		return nil, fmt.Errorf("pkcs12: encrypted private key: %w", err)
	}
	plain, err := decrypt(epki.Algorithm, epki.Data, password)
	if err != nil {
		if errors.Is(err, ErrIncorrectPassword) {
			return nil, err
		}
		return nil, fmt.Errorf("pkcs12: encrypted private key: %w", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(plain)
	if err != nil {
		return nil, fmt.Errorf("pkcs12: %w (wrong passphrase?)", err)
	}
	s, ok := k.(gocrypto.Signer)
	if !ok {
		return nil, fmt.Errorf("pkcs12: unsupported key type %T", k)
	}
	return s, nil
}

// keyMatchesCert reports whether the private key belongs to the certificate.
func keyMatchesCert(k gocrypto.Signer, c *x509.Certificate) bool {
	type equaler interface{ Equal(gocrypto.PublicKey) bool }
	pub, ok := k.Public().(equaler)
	return ok && pub.Equal(c.PublicKey)
}
