package smime

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	_ "crypto/md5" // MD5 signatures are recognised, and reported as Weak
	"crypto/rsa"
	_ "crypto/sha1"
	_ "crypto/sha256"
	_ "crypto/sha512"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"time"

	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Errors returned by Verify. Everything else about a signature is a
// SignerResult, not an error.
var (
	// ErrMalformed: the input is not a well-formed CMS SignedData.
	ErrMalformed = errors.New("smime: malformed signed-data")
	// ErrNoContent: detached signed-data given without the signed bytes,
	// or an opaque one together with detached bytes.
	ErrNoContent = errors.New("smime: signed content missing or given twice")
)

// Status is the verdict on one signerInfo.
type Status int

// Verdicts, from the worst down. Only Valid may be reported as a valid
// signature.
const (
	// Bad: the signature or a signed attribute does not verify, or uses
	// an algorithm this package does not support.
	Bad Status = iota + 1
	// Weak: cryptographically correct, but with MD5 (always) or SHA-1
	// (unless VerifyOptions.AllowSHA1).
	Weak
	// Revoked: the certificate chain holds a certificate revoked by one
	// of VerifyOptions.CRLs.
	Revoked
	// Expired: the chain is trusted but a certificate is outside its
	// validity period at VerifyOptions.Now.
	Expired
	// Untrusted: no chain to VerifyOptions.Roots (self-signed, unknown
	// issuer, signer certificate absent), or usage not allowed (EKU,
	// keyUsage).
	Untrusted
	// Valid: correct signature, allowed algorithms, chain to a root at
	// VerifyOptions.Now, usage allowed, not revoked.
	Valid
)

// String returns the lower-case token used in result headers.
func (s Status) String() string {
	switch s {
	case Valid:
		return "valid"
	case Bad:
		return "bad"
	case Untrusted:
		return "untrusted"
	case Expired:
		return "expired"
	case Revoked:
		return "revoked"
	case Weak:
		return "weak"
	}
	return fmt.Sprintf("status(%d)", int(s))
}

// VerifyOptions holds what a verification is judged against.
type VerifyOptions struct {
	// Roots are the trust anchors. Nil means none: every signer is then
	// Untrusted (the system roots are never used).
	Roots *x509.CertPool
	// CRLs are checked for every certificate of the chain; a CRL counts
	// only when its signature verifies with the certificate's issuer.
	CRLs []*x509.RevocationList
	// Now is the verification time (not the signer's claimed signing
	// time). Zero means time.Now().
	Now time.Time
	// AllowSHA1 accepts SHA-1 digests; without it they are Weak.
	AllowSHA1 bool
}

// SignerResult is the verdict on one signerInfo.
type SignerResult struct {
	Status Status
	// Reason is a short token saying why Status is not Valid:
	// "no-cert", "unsupported-algorithm", "alg-mismatch",
	// "missing-attribute", "content-type-mismatch", "digest-mismatch",
	// "bad-signature", "weak-digest", "no-chain", "eku", "key-usage",
	// "expired", "not-yet-valid", "revoked". Empty when Valid.
	Reason string
	// Cert is the signer's certificate from the message; nil when the
	// message does not carry it.
	Cert *x509.Certificate
	// Addresses are the signer's e-mail addresses (see AddressesOf).
	Addresses []string
	// Serial (upper-case hex) and Issuer (RFC 2253) identify the
	// certificate; taken from the signerInfo when Cert is nil (Issuer
	// empty when the signer is identified by key identifier).
	Serial, Issuer string
	// Digest is the digest algorithm ("sha256", ...).
	Digest string
	// SigningTime is the signer's claimed signing time, zero if absent.
	// It is information only; it plays no part in the verdict.
	SigningTime time.Time
}

// signedData is a parsed SignedData.
type signedData struct {
	contentType asn1.ObjectIdentifier
	content     []byte // nil when detached
	certs       []*x509.Certificate
	signers     []signerInfo
}

type signerInfo struct {
	id          certificateID
	digestAlg   algorithmIdentifier
	signedAttrs []byte // DER with the SET OF tag; nil when absent
	sigAlg      algorithmIdentifier
	signature   []byte
}

// Verify verifies a CMS SignedData given as BER or DER bytes: opaque
// (content inside) when detached is nil, else detached over the detached
// bytes, which must be the exact CRLF-canonical signed entity. It returns
// the signed content (detached itself, for a detached signature) and one
// verdict per signerInfo, each judged on its own. No signerInfo at all
// gives an empty slice: the content is unsigned.
//
// The error is non-nil only for input that is not a SignedData
// (ErrMalformed) or a content mismatch (ErrNoContent).
func Verify(der []byte, detached []byte, opts VerifyOptions) ([]byte, []SignerResult, error) {
	sd, ok := parseSignedData(der)
	if !ok {
		return nil, nil, ErrMalformed
	}
	content := sd.content
	switch {
	case detached != nil && content != nil, detached == nil && content == nil:
		return nil, nil, ErrNoContent
	case detached != nil:
		content = detached
	}
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	if opts.Roots == nil {
		opts.Roots = x509.NewCertPool()
	}
	inter := x509.NewCertPool()
	for _, c := range sd.certs {
		inter.AddCert(c)
	}
	results := make([]SignerResult, 0, len(sd.signers))
	for _, si := range sd.signers {
		results = append(results, verifySigner(sd, si, content, inter, opts))
	}
	return content, results, nil
}

func verifySigner(sd *signedData, si signerInfo, content []byte, inter *x509.CertPool, opts VerifyOptions) SignerResult {
	res := SignerResult{Serial: formatSerial(si.id.serial)}
	if si.id.issuer != nil {
		res.Issuer = formatName(si.id.issuer)
	}
	for _, c := range sd.certs {
		if si.id.matches(c) {
			res.Cert = c
			res.Addresses = AddressesOf(c)
			res.Serial = formatSerial(c.SerialNumber)
			res.Issuer = c.Issuer.String()
			break
		}
	}
	h, hok := digestByOID(si.digestAlg.oid)
	if hok {
		res.Digest = hashName(h)
	}
	fail := func(s Status, reason string) SignerResult {
		res.Status, res.Reason = s, reason
		return res
	}
	if res.Cert == nil {
		return fail(Untrusted, "no-cert")
	}
	if !hok {
		return fail(Bad, "unsupported-algorithm")
	}
	// What the signature covers: the signed attributes, or the content.
	signed := content
	if si.signedAttrs != nil {
		ct, md, st, ok := parseSignedAttrs(si.signedAttrs)
		if !ok {
			return fail(Bad, "missing-attribute")
		}
		res.SigningTime = st
		if !ct.Equal(sd.contentType) {
			return fail(Bad, "content-type-mismatch")
		}
		d := h.New()
		d.Write(content)
		if !bytes.Equal(d.Sum(nil), md) {
			return fail(Bad, "digest-mismatch")
		}
		signed = si.signedAttrs
	} else if !sd.contentType.Equal(oidData) {
		// RFC 5652 5.3: signedAttrs MUST be present for other types.
		return fail(Bad, "missing-attribute")
	}
	if reason := checkSignature(res.Cert.PublicKey, h, si.sigAlg, signed, si.signature); reason != "" {
		return fail(Bad, reason)
	}
	if h == crypto.MD5 || (h == crypto.SHA1 && !opts.AllowSHA1) {
		return fail(Weak, "weak-digest")
	}
	if s, reason := checkCertificate(res.Cert, inter, opts); s != Valid {
		return fail(s, reason)
	}
	res.Status = Valid
	return res
}

// parseSignedAttrs returns the content-type, message-digest and (if
// present) signing-time attributes; each of the first two must occur
// exactly once with exactly one value (RFC 5652 5.3, 11.1, 11.2).
func parseSignedAttrs(der []byte) (ct asn1.ObjectIdentifier, md []byte, st time.Time, ok bool) {
	s := cryptobyte.String(der)
	var set cryptobyte.String
	if !s.ReadASN1(&set, casn1.SET) || !s.Empty() {
		return nil, nil, st, false
	}
	nct, nmd := 0, 0
	for !set.Empty() {
		var attr, values cryptobyte.String
		var typ asn1.ObjectIdentifier
		if !set.ReadASN1(&attr, casn1.SEQUENCE) || !attr.ReadASN1ObjectIdentifier(&typ) ||
			!attr.ReadASN1(&values, casn1.SET) || !attr.Empty() {
			return nil, nil, st, false
		}
		switch {
		case typ.Equal(oidAttrContentType):
			nct++
			if !values.ReadASN1ObjectIdentifier(&ct) || !values.Empty() {
				return nil, nil, st, false
			}
		case typ.Equal(oidAttrMessageDigest):
			nmd++
			var v cryptobyte.String
			if !values.ReadASN1(&v, casn1.OCTET_STRING) || !values.Empty() {
				return nil, nil, st, false
			}
			md = v
		case typ.Equal(oidAttrSigningTime):
			var t time.Time
			switch {
			case values.PeekASN1Tag(casn1.UTCTime):
				if values.ReadASN1UTCTime(&t) {
					st = t
				}
			case values.PeekASN1Tag(casn1.GeneralizedTime):
				if values.ReadASN1GeneralizedTime(&t) {
					st = t
				}
			}
		}
	}
	return ct, md, st, nct == 1 && nmd == 1
}

// checkSignature verifies sig over data (hashed with h where the scheme
// hashes) and returns "" or a reason token.
func checkSignature(pub crypto.PublicKey, h crypto.Hash, alg algorithmIdentifier, data, sig []byte) string {
	oid := alg.oid
	digest := func(hh crypto.Hash) []byte {
		d := hh.New()
		d.Write(data)
		return d.Sum(nil)
	}
	// Signature algorithms that name a hash must agree with digestAlgorithm.
	named := map[string]crypto.Hash{
		"1.2.840.113549.1.1.4":  crypto.MD5,
		"1.2.840.113549.1.1.5":  crypto.SHA1,
		"1.2.840.113549.1.1.14": crypto.SHA224,
		"1.2.840.113549.1.1.11": crypto.SHA256,
		"1.2.840.113549.1.1.12": crypto.SHA384,
		"1.2.840.113549.1.1.13": crypto.SHA512,
		"1.2.840.10045.4.1":     crypto.SHA1,
		"1.2.840.10045.4.3.1":   crypto.SHA224,
		"1.2.840.10045.4.3.2":   crypto.SHA256,
		"1.2.840.10045.4.3.3":   crypto.SHA384,
		"1.2.840.10045.4.3.4":   crypto.SHA512,
	}
	if nh, ok := named[oid.String()]; ok && nh != h {
		return "alg-mismatch"
	}
	switch oid.String() {
	case "1.2.840.113549.1.1.1", "1.2.840.113549.1.1.4", "1.2.840.113549.1.1.5",
		"1.2.840.113549.1.1.14", "1.2.840.113549.1.1.11", "1.2.840.113549.1.1.12",
		"1.2.840.113549.1.1.13":
		k, ok := pub.(*rsa.PublicKey)
		if !ok {
			return "alg-mismatch"
		}
		if rsa.VerifyPKCS1v15(k, h, digest(h), sig) != nil {
			return "bad-signature"
		}
		return ""
	case oidRSASSAPSS.String():
		k, ok := pub.(*rsa.PublicKey)
		if !ok {
			return "alg-mismatch"
		}
		ph, salt, ok := parsePSSParams(alg.params)
		if !ok {
			return "unsupported-algorithm"
		}
		if ph != h {
			return "alg-mismatch"
		}
		if rsa.VerifyPSS(k, h, digest(h), sig, &rsa.PSSOptions{SaltLength: salt, Hash: h}) != nil {
			return "bad-signature"
		}
		return ""
	case "1.2.840.10045.4.1", "1.2.840.10045.4.3.1", "1.2.840.10045.4.3.2",
		"1.2.840.10045.4.3.3", "1.2.840.10045.4.3.4", "1.2.840.10045.2.1":
		k, ok := pub.(*ecdsa.PublicKey)
		if !ok {
			return "alg-mismatch"
		}
		if !ecdsa.VerifyASN1(k, digest(h), sig) {
			return "bad-signature"
		}
		return ""
	case "1.3.101.112": // Ed25519, RFC 8419
		k, ok := pub.(ed25519.PublicKey)
		if !ok {
			return "alg-mismatch"
		}
		if !ed25519.Verify(k, data, sig) {
			return "bad-signature"
		}
		return ""
	}
	return "unsupported-algorithm"
}

// parsePSSParams parses RSASSA-PSS-params (RFC 4055); only MGF1 with the
// same hash as the signature and trailer field 1 are supported.
func parsePSSParams(p cryptobyte.String) (crypto.Hash, int, bool) {
	h, mgf, salt, trailer := crypto.SHA1, crypto.SHA1, 20, 1
	if p != nil {
		var seq cryptobyte.String
		if !p.ReadASN1(&seq, casn1.SEQUENCE) || !p.Empty() {
			return 0, 0, false
		}
		if seq.PeekASN1Tag(casn1.Tag(0).Constructed().ContextSpecific()) {
			var e cryptobyte.String
			if !seq.ReadASN1(&e, casn1.Tag(0).Constructed().ContextSpecific()) {
				return 0, 0, false
			}
			a, ok := readAlgorithmIdentifier(&e)
			if !ok || !e.Empty() {
				return 0, 0, false
			}
			if h, ok = digestByOID(a.oid); !ok {
				return 0, 0, false
			}
		}
		if seq.PeekASN1Tag(casn1.Tag(1).Constructed().ContextSpecific()) {
			var ok bool
			if mgf, ok = readMGF1(&seq, 1); !ok {
				return 0, 0, false
			}
		}
		for i, dst := range []*int{&salt, &trailer} {
			tag := casn1.Tag(2 + i).Constructed().ContextSpecific()
			if seq.PeekASN1Tag(tag) {
				var e cryptobyte.String
				if !seq.ReadASN1(&e, tag) || !e.ReadASN1Integer(dst) || !e.Empty() {
					return 0, 0, false
				}
			}
		}
		if !seq.Empty() {
			return 0, 0, false
		}
	}
	if mgf != h || trailer != 1 || salt < 0 {
		return 0, 0, false
	}
	return h, salt, true
}

// checkCertificate judges the signer certificate at opts.Now: chain to
// the roots with the message's certificates as intermediates, EKU
// emailProtection (or any, or none) along the chain, keyUsage, CRLs.
func checkCertificate(leaf *x509.Certificate, inter *x509.CertPool, opts VerifyOptions) (Status, string) {
	if leaf.KeyUsage != 0 && leaf.KeyUsage&(x509.KeyUsageDigitalSignature|x509.KeyUsageContentCommitment) == 0 {
		return Untrusted, "key-usage"
	}
	vo := x509.VerifyOptions{
		Roots:         opts.Roots,
		Intermediates: inter,
		CurrentTime:   opts.Now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
	}
	chains, err := leaf.Verify(vo)
	if err == nil {
		if revoked(chains, opts) {
			return Revoked, "revoked"
		}
		return Valid, ""
	}
	var cie x509.CertificateInvalidError
	if errors.As(err, &cie) {
		switch cie.Reason {
		case x509.Expired:
			// Trusted apart from time? Try again inside the leaf's
			// validity period.
			reason := "expired"
			if opts.Now.Before(leaf.NotBefore) {
				reason = "not-yet-valid"
				vo.CurrentTime = leaf.NotBefore
			} else {
				vo.CurrentTime = leaf.NotAfter
			}
			chains, err := leaf.Verify(vo)
			if err != nil {
				return Untrusted, "no-chain"
			}
			if revoked(chains, opts) {
				return Revoked, "revoked"
			}
			return Expired, reason
		case x509.IncompatibleUsage:
			return Untrusted, "eku"
		}
	}
	return Untrusted, "no-chain"
}

// revoked reports whether every chain holds a certificate listed in a
// CRL signed by that certificate's issuer in the chain.
func revoked(chains [][]*x509.Certificate, opts VerifyOptions) bool {
	if len(opts.CRLs) == 0 || len(chains) == 0 {
		return false
	}
	for _, chain := range chains {
		if !chainRevoked(chain, opts.CRLs) {
			return false
		}
	}
	return true
}

func chainRevoked(chain []*x509.Certificate, crls []*x509.RevocationList) bool {
	for i := 0; i+1 < len(chain); i++ {
		cert, issuer := chain[i], chain[i+1]
		for _, crl := range crls {
			if !bytes.Equal(crl.RawIssuer, issuer.RawSubject) || crl.CheckSignatureFrom(issuer) != nil {
				continue
			}
			for _, e := range crl.RevokedCertificateEntries {
				if e.SerialNumber != nil && e.SerialNumber.Cmp(cert.SerialNumber) == 0 {
					return true
				}
			}
		}
	}
	return false
}

// parseSignedData parses ContentInfo { SignedData }.
func parseSignedData(ber []byte) (*signedData, bool) {
	ctype, content, ok := readContentInfo(ber)
	if !ok || !ctype.Equal(oidSignedData) {
		return nil, false
	}
	sd := &signedData{}
	var body, digestAlgs, eci, sis cryptobyte.String
	var version int
	if !content.ReadASN1(&body, casn1.SEQUENCE) || !content.Empty() ||
		!body.ReadASN1Integer(&version) ||
		!body.ReadASN1(&digestAlgs, casn1.SET) ||
		!body.ReadASN1(&eci, casn1.SEQUENCE) ||
		!eci.ReadASN1ObjectIdentifier(&sd.contentType) {
		return nil, false
	}
	if !eci.Empty() {
		var e cryptobyte.String
		if !eci.ReadASN1(&e, casn1.Tag(0).Constructed().ContextSpecific()) || !eci.Empty() {
			return nil, false
		}
		c, ok := readOctets(&e, casn1.OCTET_STRING)
		if !ok || !e.Empty() {
			return nil, false
		}
		sd.content = c
		if sd.content == nil {
			sd.content = []byte{}
		}
	}
	if body.PeekASN1Tag(casn1.Tag(0).Constructed().ContextSpecific()) {
		var certs cryptobyte.String
		if !body.ReadASN1(&certs, casn1.Tag(0).Constructed().ContextSpecific()) {
			return nil, false
		}
		for !certs.Empty() {
			var c cryptobyte.String
			var tag casn1.Tag
			if !certs.ReadAnyASN1Element(&c, &tag) {
				return nil, false
			}
			if tag != casn1.SEQUENCE {
				continue // attribute or other certificate formats
			}
			if cert, err := x509.ParseCertificate(c); err == nil {
				sd.certs = append(sd.certs, cert)
			}
		}
	}
	// crls [1] IMPLICIT: not used (CRLs come from the keystore).
	if !body.SkipOptionalASN1(casn1.Tag(1).Constructed().ContextSpecific()) ||
		!body.ReadASN1(&sis, casn1.SET) || !body.Empty() {
		return nil, false
	}
	for !sis.Empty() {
		var s cryptobyte.String
		var si signerInfo
		var v int
		if !sis.ReadASN1(&s, casn1.SEQUENCE) || !s.ReadASN1Integer(&v) {
			return nil, false
		}
		if si.id, ok = readCertificateID(&s); !ok {
			return nil, false
		}
		if si.digestAlg, ok = readAlgorithmIdentifier(&s); !ok {
			return nil, false
		}
		if s.PeekASN1Tag(casn1.Tag(0).Constructed().ContextSpecific()) {
			var attrs cryptobyte.String
			if !s.ReadASN1Element(&attrs, casn1.Tag(0).Constructed().ContextSpecific()) {
				return nil, false
			}
			si.signedAttrs = append([]byte{byte(casn1.SET)}, attrs[1:]...)
		}
		if si.sigAlg, ok = readAlgorithmIdentifier(&s); !ok {
			return nil, false
		}
		var sig cryptobyte.String
		if !s.ReadASN1(&sig, casn1.OCTET_STRING) ||
			!s.SkipOptionalASN1(casn1.Tag(1).Constructed().ContextSpecific()) || !s.Empty() {
			return nil, false
		}
		si.signature = sig
		sd.signers = append(sd.signers, si)
	}
	return sd, true
}
