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
	"io"
	"time"

	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/cryptmilter/cryptmilter/internal/spool"
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

// signedData is a parsed SignedData, but for its content.
type signedData struct {
	contentType asn1.ObjectIdentifier
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
// gives an empty slice: the content is unsigned. It is VerifyDetached or
// VerifyOpaque with everything in memory.
//
// The error is non-nil only for input that is not a SignedData
// (ErrMalformed) or a content mismatch (ErrNoContent).
func Verify(der []byte, detached []byte, opts VerifyOptions) ([]byte, []SignerResult, error) {
	if detached != nil {
		signers, err := VerifyDetached(der, func() io.Reader { return bytes.NewReader(detached) }, opts)
		if err != nil {
			return nil, nil, err
		}
		return detached, signers, nil
	}
	buf, signers, err := VerifyOpaque(bytes.NewReader(der), nil, opts)
	if err != nil {
		return nil, nil, err
	}
	defer buf.Close()
	content, err := buf.Bytes()
	if err != nil {
		return nil, nil, err
	}
	return content, signers, nil
}

// VerifyDetached verifies a detached CMS SignedData der (BER or DER) over
// the signed content, which open returns a reader of, the same bytes each
// time it is called: the content is hashed as it is read, once per digest
// algorithm, and never held. It returns one verdict per signerInfo. The
// error is ErrMalformed for der that is not a SignedData, ErrNoContent
// when der carries content of its own, or a failure reading the content.
func VerifyDetached(der []byte, open func() io.Reader, opts VerifyOptions) ([]SignerResult, error) {
	present := &presence{}
	sd, err := readSignedData(bytes.NewReader(der), present)
	switch {
	case err != nil:
		return nil, err
	case present.seen:
		return nil, ErrNoContent
	}
	c := &contentSource{open: open}
	results := verifySigners(sd, c, opts)
	if c.err != nil {
		return nil, fmt.Errorf("smime: read signed content: %w", c.err)
	}
	return results, nil
}

// VerifyOpaque verifies an opaque CMS SignedData read as a stream of BER
// or DER from r: its content is copied as it is read to a spool buffer of
// sp (memory when sp is nil), then hashed from there. It returns the
// buffer, for the caller to close, and one verdict per signerInfo. The
// error is ErrMalformed for input that is not a SignedData, ErrNoContent
// when it has no content, or a failure reading r or the spool, returned
// wrapped.
func VerifyOpaque(r io.Reader, sp *spool.Dir, opts VerifyOptions) (*spool.Buffer, []SignerResult, error) {
	buf := newBuffer(sp)
	present := &presence{w: buf}
	sd, err := readSignedData(r, present)
	if err == nil && !present.seen {
		err = ErrNoContent
	}
	if err != nil {
		buf.Close()
		return nil, nil, err
	}
	c := &contentSource{open: buf.Reader}
	results := verifySigners(sd, c, opts)
	if c.err != nil {
		buf.Close()
		return nil, nil, fmt.Errorf("smime: read signed content: %w", c.err)
	}
	return buf, results, nil
}

// presence receives the content of a SignedData: it records that there
// is one, and passes it on to w (nil: drops it).
type presence struct {
	w    io.Writer
	seen bool
}

func (p *presence) Write(b []byte) (int, error) {
	if p.w == nil {
		return len(b), nil
	}
	return p.w.Write(b)
}

// contentSource is the signed content, read again for each digest it is
// hashed with. err is its first read error.
type contentSource struct {
	open    func() io.Reader
	digests map[crypto.Hash][]byte
	err     error
}

// digest returns the content's digest with h.
func (c *contentSource) digest(h crypto.Hash) []byte {
	if d, ok := c.digests[h]; ok {
		return d
	}
	d := h.New()
	if _, err := io.Copy(d, c.open()); err != nil && c.err == nil {
		c.err = err
	}
	if c.digests == nil {
		c.digests = map[crypto.Hash][]byte{}
	}
	c.digests[h] = d.Sum(nil)
	return c.digests[h]
}

// maxDirectContent bounds content that a signature covers without hashing
// it first (Ed25519 without signed attributes, RFC 8419): it is read into
// memory.
const maxDirectContent = 1 << 20

// all returns the whole content when it is at most max bytes.
func (c *contentSource) all(max int) ([]byte, bool) {
	b, err := io.ReadAll(io.LimitReader(c.open(), int64(max)+1))
	if err != nil {
		if c.err == nil {
			c.err = err
		}
		return nil, false
	}
	return b, len(b) <= max
}

// signedBytes is what a signature covers: the signed attributes, held in
// memory, or the content.
type signedBytes struct {
	mem     []byte
	content *contentSource // when mem is nil
}

func (s signedBytes) digest(h crypto.Hash) []byte {
	if s.content != nil {
		return s.content.digest(h)
	}
	d := h.New()
	d.Write(s.mem)
	return d.Sum(nil)
}

// raw returns the bytes themselves (false when they are too many).
func (s signedBytes) raw() ([]byte, bool) {
	if s.content != nil {
		return s.content.all(maxDirectContent)
	}
	return s.mem, true
}

func verifySigners(sd *signedData, content *contentSource, opts VerifyOptions) []SignerResult {
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
	return results
}

func verifySigner(sd *signedData, si signerInfo, content *contentSource, inter *x509.CertPool, opts VerifyOptions) SignerResult {
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
	signed := signedBytes{content: content}
	if si.signedAttrs != nil {
		ct, md, st, ok := parseSignedAttrs(si.signedAttrs)
		if !ok {
			return fail(Bad, "missing-attribute")
		}
		res.SigningTime = st
		if !ct.Equal(sd.contentType) {
			return fail(Bad, "content-type-mismatch")
		}
		if !bytes.Equal(content.digest(h), md) {
			return fail(Bad, "digest-mismatch")
		}
		signed = signedBytes{mem: si.signedAttrs}
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
func checkSignature(pub crypto.PublicKey, h crypto.Hash, alg algorithmIdentifier, data signedBytes, sig []byte) string {
	oid := alg.oid
	digest := data.digest
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
		msg, ok := data.raw()
		if !ok {
			return "unsupported-algorithm" // pure Ed25519 over large content
		}
		if !ed25519.Verify(k, msg, sig) {
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

// readSignedData reads ContentInfo { SignedData } from r as a stream; the
// content, if any, goes to content. The error is ErrMalformed, a failure
// reading r, or a failure writing content.
func readSignedData(r io.Reader, content *presence) (*signedData, error) {
	b := newBERReader(r)
	sd, err := readSignedDataStream(b, content)
	switch {
	case b.err != nil:
		return nil, fmt.Errorf("smime: read signed-data: %w", b.err)
	case errors.Is(err, errStreamBER):
		return nil, ErrMalformed
	case err != nil:
		return nil, fmt.Errorf("smime: spool signed content: %w", err)
	}
	return sd, nil
}

func readSignedDataStream(b *berReader, content *presence) (*signedData, error) {
	ctype, f0, fci, err := readContentInfoHead(b)
	if err != nil {
		return nil, err
	}
	if !ctype.Equal(oidSignedData) {
		return nil, errStreamBER
	}
	sd := &signedData{}
	h, err := b.next(&f0)
	if err != nil || !h.is(universal, 16, true) {
		return nil, orBER(err)
	}
	body := b.enter(h)
	if _, err := b.integer(&body); err != nil {
		return nil, err
	}
	// digestAlgorithms SET: the signerInfos name their own.
	if h, err = b.next(&body); err != nil || !h.is(universal, 17, true) {
		return nil, orBER(err)
	}
	if err := b.skip(h); err != nil {
		return nil, err
	}
	// encapContentInfo { eContentType, eContent [0] EXPLICIT OCTET STRING OPTIONAL }
	if h, err = b.next(&body); err != nil || !h.is(universal, 16, true) {
		return nil, orBER(err)
	}
	eci := b.enter(h)
	if sd.contentType, err = b.oid(&eci); err != nil {
		return nil, err
	}
	more, err := b.more(eci)
	if err != nil {
		return nil, err
	}
	if more {
		if h, err = b.header(&eci); err != nil || !h.is(contextSpecific, 0, true) {
			return nil, orBER(err)
		}
		e := b.enter(h)
		if h, err = b.next(&e); err != nil || h.class != universal || h.number != 4 {
			return nil, orBER(err)
		}
		content.seen = true
		if _, err := io.Copy(content, b.octets(h)); err != nil {
			return nil, err
		}
		if more, err := b.more(e); err != nil || more {
			return nil, orBER(err)
		}
		if more, err := b.more(eci); err != nil || more {
			return nil, orBER(err)
		}
	}
	// certificates [0] IMPLICIT OPTIONAL, crls [1] IMPLICIT OPTIONAL (CRLs
	// come from the keystore), signerInfos SET.
	if h, err = b.next(&body); err != nil {
		return nil, err
	}
	if h.is(contextSpecific, 0, true) {
		der, err := b.element(h)
		if err != nil {
			return nil, err
		}
		if sd.certs, err = parseCertificates(der); err != nil {
			return nil, err
		}
		if h, err = b.next(&body); err != nil {
			return nil, err
		}
	}
	if h.is(contextSpecific, 1, true) {
		if err := b.skip(h); err != nil {
			return nil, err
		}
		if h, err = b.next(&body); err != nil {
			return nil, err
		}
	}
	if !h.is(universal, 17, true) {
		return nil, errStreamBER
	}
	der, err := b.element(h)
	if err != nil {
		return nil, err
	}
	if sd.signers, err = parseSignerInfos(der); err != nil {
		return nil, err
	}
	for _, f := range []frame{body, f0, fci} {
		if more, err := b.more(f); err != nil || more {
			return nil, orBER(err)
		}
	}
	if err := b.trailer(); err != nil {
		return nil, err
	}
	return sd, nil
}

// parseCertificates parses the DER of a certificates [0] IMPLICIT SET:
// the X.509 certificates in it (other formats are skipped, and so are
// certificates that do not parse).
func parseCertificates(der []byte) ([]*x509.Certificate, error) {
	in := cryptobyte.String(der)
	var certs cryptobyte.String
	if !in.ReadASN1(&certs, casn1.Tag(0).Constructed().ContextSpecific()) || !in.Empty() {
		return nil, errStreamBER
	}
	var out []*x509.Certificate
	for !certs.Empty() {
		var c cryptobyte.String
		var tag casn1.Tag
		if !certs.ReadAnyASN1Element(&c, &tag) {
			return nil, errStreamBER
		}
		if tag != casn1.SEQUENCE {
			continue // attribute or other certificate formats
		}
		if cert, err := x509.ParseCertificate(c); err == nil {
			out = append(out, cert)
		}
	}
	return out, nil
}

// parseSignerInfos parses the DER of a signerInfos SET.
func parseSignerInfos(der []byte) ([]signerInfo, error) {
	in := cryptobyte.String(der)
	var sis cryptobyte.String
	if !in.ReadASN1(&sis, casn1.SET) || !in.Empty() {
		return nil, errStreamBER
	}
	var out []signerInfo
	for !sis.Empty() {
		var s cryptobyte.String
		var si signerInfo
		var v int
		var ok bool
		if !sis.ReadASN1(&s, casn1.SEQUENCE) || !s.ReadASN1Integer(&v) {
			return nil, errStreamBER
		}
		if si.id, ok = readCertificateID(&s); !ok {
			return nil, errStreamBER
		}
		if si.digestAlg, ok = readAlgorithmIdentifier(&s); !ok {
			return nil, errStreamBER
		}
		if s.PeekASN1Tag(casn1.Tag(0).Constructed().ContextSpecific()) {
			var attrs cryptobyte.String
			if !s.ReadASN1Element(&attrs, casn1.Tag(0).Constructed().ContextSpecific()) {
				return nil, errStreamBER
			}
			si.signedAttrs = append([]byte{byte(casn1.SET)}, attrs[1:]...)
		}
		if si.sigAlg, ok = readAlgorithmIdentifier(&s); !ok {
			return nil, errStreamBER
		}
		var sig cryptobyte.String
		if !s.ReadASN1(&sig, casn1.OCTET_STRING) ||
			!s.SkipOptionalASN1(casn1.Tag(1).Constructed().ContextSpecific()) || !s.Empty() {
			return nil, errStreamBER
		}
		si.signature = sig
		out = append(out, si)
	}
	return out, nil
}
