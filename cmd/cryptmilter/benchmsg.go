package main

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"strings"
	"time"

	pgpcrypto "github.com/ProtonMail/gopenpgp/v3/crypto"
	"github.com/ProtonMail/gopenpgp/v3/profile"

	"github.com/cryptmilter/cryptmilter/crypto/mime"
	"github.com/cryptmilter/cryptmilter/crypto/openpgp"
	"github.com/cryptmilter/cryptmilter/crypto/smime"
	"github.com/cryptmilter/cryptmilter/internal/config"
	"github.com/cryptmilter/cryptmilter/keystore"
)

// benchMsg is the MIME part of one bench message: its Content-* fields
// and its body, as the MTA would send them.
type benchMsg struct {
	fields [][2]string
	body   []byte
}

// plainBenchMsg is a text message of size bytes.
func plainBenchMsg(size int) benchMsg {
	return benchMsg{
		fields: [][2]string{{"Content-Type", "text/plain; charset=utf-8"}, {"Content-Transfer-Encoding", "8bit"}},
		body:   benchBody(size),
	}
}

// benchSigner is the correspondent that signs inbound bench messages.
type benchSigner struct {
	pgp       *pgpcrypto.Key
	smime     smime.Identity
	throwaway bool
}

// loadBenchSigner reads the correspondent's secret key from file (an
// unlocked armored OpenPGP secret key, or a PEM private key with its
// certificate), or generates a throwaway correspondent for from when
// file is empty.
func loadBenchSigner(file, protocol, from string) (*benchSigner, error) {
	if file == "" {
		return throwawaySigner(protocol, from)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	if protocol == "openpgp" {
		k, err := pgpcrypto.NewKeyFromArmored(string(data))
		if err != nil {
			k, err = pgpcrypto.NewKey(data)
		}
		if err != nil {
			return nil, fmt.Errorf("--signer-key %s: not an OpenPGP key: %w", file, err)
		}
		if !k.IsPrivate() {
			return nil, fmt.Errorf("--signer-key %s: a public key; the correspondent's secret key is needed", file)
		}
		if locked, err := k.IsLocked(); err != nil || locked {
			return nil, fmt.Errorf("--signer-key %s: the secret key is protected by a passphrase; export it without one", file)
		}
		openpgp.Prepare(k)
		return &benchSigner{pgp: k}, nil
	}
	var id smime.Identity
	for rest := data; ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		switch {
		case blk.Type == "CERTIFICATE" && id.Cert == nil:
			if id.Cert, err = x509.ParseCertificate(blk.Bytes); err != nil {
				return nil, fmt.Errorf("--signer-key %s: %w", file, err)
			}
		case strings.HasSuffix(blk.Type, "PRIVATE KEY") && id.Key == nil:
			if id.Key, err = parsePrivateKey(blk.Bytes); err != nil {
				return nil, fmt.Errorf("--signer-key %s: %w", file, err)
			}
		}
	}
	if id.Cert == nil || id.Key == nil {
		return nil, fmt.Errorf("--signer-key %s: want a PEM file with the correspondent's private key and certificate", file)
	}
	return &benchSigner{smime: id}, nil
}

func parsePrivateKey(der []byte) (any, error) {
	if k, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		return k, nil
	}
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return k, nil
	}
	if k, err := x509.ParseECPrivateKey(der); err == nil {
		return k, nil
	}
	return nil, errors.New("unsupported private key (want PKCS#8, PKCS#1 or SEC 1)")
}

// throwawaySigner generates a correspondent for from: a Curve25519
// OpenPGP key, or an RSA-2048 key with a self-signed certificate. The
// gateway does not know it, so its signatures read "untrusted".
func throwawaySigner(protocol, from string) (*benchSigner, error) {
	now := time.Now()
	if protocol == "openpgp" {
		k, err := pgpcrypto.PGPWithProfile(profile.Default()).KeyGeneration().AddUserId("Bench Correspondent", from).
			GenerationTime(now.Add(-time.Hour).Unix()).New().GenerateKey()
		if err != nil {
			return nil, err
		}
		openpgp.Prepare(k)
		return &benchSigner{pgp: k, throwaway: true}, nil
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:   big.NewInt(now.UnixNano()),
		Subject:        pkix.Name{CommonName: from},
		EmailAddresses: []string{from},
		NotBefore:      now.Add(-time.Hour),
		NotAfter:       now.Add(24 * time.Hour),
		KeyUsage:       x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &benchSigner{smime: smime.Identity{Cert: cert, Key: key}, throwaway: true}, nil
}

// benchGateway is the gateway's public key or certificate for rcpt, read
// from the keystore of the configuration file.
type benchGateway struct {
	pgp  *pgpcrypto.Key
	cert *x509.Certificate
}

func loadBenchGateway(cfgFile, protocol, rcpt string) (*benchGateway, error) {
	cfg, err := config.Load(cfgFile)
	if err != nil {
		return nil, err
	}
	snap, err := keystore.Load(keystoreOptions(cfg, nil))
	if err != nil {
		return nil, err
	}
	if protocol == "openpgp" {
		k, err := snap.GatewayOpenPGPAt(rcpt, time.Now())
		if err != nil {
			return nil, fmt.Errorf("keystore %s: no gateway OpenPGP key for %s: %w", cfg.Keystore, rcpt, err)
		}
		pub, err := k.ToPublic()
		if err != nil {
			return nil, err
		}
		openpgp.Prepare(pub)
		return &benchGateway{pgp: pub}, nil
	}
	id, err := snap.GatewaySMIME(rcpt)
	if err != nil {
		return nil, fmt.Errorf("keystore %s: no gateway S/MIME identity for %s: %w", cfg.Keystore, rcpt, err)
	}
	return &benchGateway{cert: id.Cert}, nil
}

// encryptedBenchMsg builds message i: a text entity of size bytes signed
// by s and encrypted to gw, as the correspondent's mail client would
// send it (PGP/MIME, RFC 3156 combined; or S/MIME multipart/signed inside
// EnvelopedData).
func encryptedBenchMsg(i, size int, protocol string, s *benchSigner, gw *benchGateway) (benchMsg, error) {
	var inner bytes.Buffer
	text := benchBody(size)
	copy(text, fmt.Sprintf("bench message %08d\r\n", i)) // every ciphertext different
	h := mime.Header{{Name: "Content-Type", Value: "text/plain; charset=utf-8"}, {Name: "Content-Transfer-Encoding", Value: "8bit"}}
	var body bytes.Buffer
	ch, err := mime.Canonicalize(&body, h, bytes.NewReader(text), mime.CanonOptions{})
	if err != nil {
		return benchMsg{}, err
	}
	ch.WriteTo(&inner)
	inner.Write(body.Bytes())
	if protocol == "openpgp" {
		var armored bytes.Buffer
		if err := openpgp.SignEncrypt(&armored, bytes.NewReader(inner.Bytes()), s.pgp, []*pgpcrypto.Key{gw.pgp}, false); err != nil {
			return benchMsg{}, err
		}
		boundary := mime.NewBoundary()
		var out bytes.Buffer
		if err := mime.WritePGPEncrypted(&out, boundary, &armored); err != nil {
			return benchMsg{}, err
		}
		return benchMsg{fields: [][2]string{{"Content-Type", mime.EncryptedContentType(boundary)}}, body: out.Bytes()}, nil
	}
	sig, err := smime.SignDetached(inner.Bytes(), s.smime, nil)
	if err != nil {
		return benchMsg{}, err
	}
	var sb bytes.Buffer
	if err := mime.WriteBase64(&sb, sig); err != nil {
		return benchMsg{}, err
	}
	boundary := mime.NewBoundary()
	var signed bytes.Buffer
	signed.WriteString("Content-Type: " + mime.SignedContentType(mime.ProtocolPKCS7Signature, "sha-256", boundary) + "\r\n\r\n")
	if err := mime.WriteMultipartSigned(&signed, boundary, bytes.NewReader(inner.Bytes()), mime.SMIMESignatureHeader(), &sb); err != nil {
		return benchMsg{}, err
	}
	env, err := smime.Encrypt(signed.Bytes(), []*x509.Certificate{gw.cert})
	if err != nil {
		return benchMsg{}, err
	}
	var out bytes.Buffer
	if err := mime.WriteBase64(&out, env); err != nil {
		return benchMsg{}, err
	}
	return benchMsg{
		fields: [][2]string{{"Content-Type", mime.EnvelopedContentType}, {"Content-Transfer-Encoding", "base64"}},
		body:   out.Bytes(),
	}, nil
}
