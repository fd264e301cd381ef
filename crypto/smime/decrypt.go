package smime

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/rand"
	"crypto/rsa"
	"crypto/subtle"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"

	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/cryptmilter/cryptmilter/internal/spool"
)

// ErrDecrypt is the one error every decryption failure returns: no usable
// recipient key, RSA padding, wrong key length, CBC padding, GCM tag,
// unsupported algorithm and malformed input all look the same to the
// caller (and, as far as possible, take the same time), so the gateway is
// no padding or format oracle. It is returned unwrapped.
var ErrDecrypt = errors.New("smime: cannot decrypt message")

// ErrNotForUs is returned when no recipientInfo names any of the given
// certificates (by issuer and serial number or subject key identifier).
// That is public information from the message, so it may be told apart.
var ErrNotForUs = errors.New("smime: message is not encrypted to a gateway certificate")

// DecryptInfo describes a successful decryption.
type DecryptInfo struct {
	Identity         int                   // index of the Identity in ids that decrypted
	Serial           string                // its certificate's serial number, upper-case hex
	Issuer           string                // its certificate's issuer, RFC 2253
	KeyAlgorithm     string                // "rsa-pkcs1v15", "rsa-oaep-sha1", "rsa-oaep-sha256", ...
	ContentAlgorithm string                // "aes-256-cbc", "aes-128-gcm", "des-ede3-cbc", ...
	Authenticated    bool                  // AuthEnvelopedData: content integrity checked (AEAD)
	ContentType      asn1.ObjectIdentifier // inner content type (id-data for MIME)
}

// keyTransRecipient is one KeyTransRecipientInfo.
type keyTransRecipient struct {
	id           certificateID
	alg          algorithmIdentifier
	encryptedKey []byte
}

// envelope is an EnvelopedData or AuthEnvelopedData as far as it is
// read before its content: what is needed to decrypt it.
type envelope struct {
	auth        bool
	recipients  []keyTransRecipient
	contentType asn1.ObjectIdentifier
	contentAlg  algorithmIdentifier
}

// Decrypt decrypts a CMS EnvelopedData or AuthEnvelopedData (RFC 5083/5084,
// AES-GCM) addressed to one of ids, given as BER or DER bytes (the
// base64-decoded body of an application/pkcs7-mime part), and returns the
// inner content, normally a MIME entity. It is DecryptReader with the
// content in memory; see there.
func Decrypt(der []byte, ids []Identity) ([]byte, DecryptInfo, error) {
	buf, info, err := DecryptReader(func() io.Reader { return bytes.NewReader(der) }, ids, nil)
	if err != nil {
		return nil, DecryptInfo{}, err
	}
	defer buf.Close()
	content, err := buf.Bytes()
	return content, info, err
}

// maxCandidates bounds the decryption attempts of one message (each
// recipientInfo that names a gateway certificate is one).
const maxCandidates = 8

// DecryptReader decrypts a CMS EnvelopedData or AuthEnvelopedData (RFC
// 5083/5084, AES-GCM) addressed to one of ids, read as a stream of BER or
// DER: open returns a reader of the message, the same bytes each time it
// is called (once per decryption attempt). The content is decrypted as
// it is read into a spool buffer of sp (memory when sp is nil), which is
// returned, for the caller to close, only once the whole message was
// read and checked: for AuthEnvelopedData the GCM tag, for EnvelopedData
// the padding; the buffer of a failed attempt is released unread. No
// plaintext is handed out before its integrity check.
//
// Key transport: RSA PKCS#1 v1.5 (with RFC 3218 implicit rejection) and
// RSA-OAEP (any of SHA-1/224/256/384/512, MGF1). Content: AES-128/192/256
// in CBC or GCM, and 3DES-CBC for old clients. Key-agreement, KEK and
// password recipients are skipped, not refused.
//
// Every failure returns ErrDecrypt, except ErrNotForUs when no recipient
// names one of our certificates (decided from the recipients alone,
// before the content is read), and an error reading open's reader, which
// is returned wrapped (a local failure, or a transfer encoding that does
// not decode).
func DecryptReader(open func() io.Reader, ids []Identity, sp *spool.Dir) (*spool.Buffer, DecryptInfo, error) {
	s, err := readEnvelopeHead(open())
	if err != nil {
		return nil, DecryptInfo{}, s.failure(err)
	}
	env := &s.env
	type candidate struct {
		r   keyTransRecipient
		idx int
	}
	var cands []candidate
	for _, r := range env.recipients {
		for i, id := range ids {
			if r.id.matches(id.Cert) {
				cands = append(cands, candidate{r, i})
			}
		}
	}
	switch {
	case len(cands) == 0:
		return nil, DecryptInfo{}, ErrNotForUs
	case len(cands) > maxCandidates || s.content == nil:
		return nil, DecryptInfo{}, ErrDecrypt
	}
	cipherName, keyLen, ok := contentCipher(env)
	if !ok {
		return nil, DecryptInfo{}, ErrDecrypt
	}
	for n, c := range cands {
		priv, isRSA := ids[c.idx].Key.(*rsa.PrivateKey)
		if !isRSA {
			continue
		}
		cek, keyAlg, valid, ok := unwrapKey(priv, c.r, keyLen)
		if !ok {
			continue
		}
		if n > 0 {
			// Another attempt reads the message again.
			if s, err = readEnvelopeHead(open()); err != nil {
				return nil, DecryptInfo{}, s.failure(err)
			}
		}
		buf := newBuffer(sp)
		ok, err := s.decrypt(cek, buf)
		if err != nil {
			buf.Close()
			return nil, DecryptInfo{}, err
		}
		if !ok || valid != 1 {
			buf.Close()
			continue
		}
		cert := ids[c.idx].Cert
		return buf, DecryptInfo{
			Identity:         c.idx,
			Serial:           formatSerial(cert.SerialNumber),
			Issuer:           cert.Issuer.String(),
			KeyAlgorithm:     keyAlg,
			ContentAlgorithm: cipherName,
			Authenticated:    env.auth,
			ContentType:      env.contentType,
		}, nil
	}
	return nil, DecryptInfo{}, ErrDecrypt
}

// newBuffer returns a spool buffer of sp, or one in memory.
func newBuffer(sp *spool.Dir) *spool.Buffer {
	if sp == nil {
		return spool.FromBytes(nil)
	}
	return sp.New()
}

// envelopeStream is an EnvelopedData or AuthEnvelopedData being read: the
// part before the content, the content's reader, and the frames to close
// after it.
type envelopeStream struct {
	env     envelope
	b       *berReader
	content *octetReader // nil when the message has no encrypted content
	eci     frame        // encryptedContentInfo
	body    frame        // EnvelopedData
	outer   []frame      // [0] EXPLICIT, ContentInfo
	// From after the content (AuthEnvelopedData).
	authAttrs []byte // DER of authAttrs with the SET OF tag, for the AAD
	mac       []byte
	// unread are the elements the parser passed over without reading
	// them (originatorInfo, recipient infos other than key transport,
	// unprotected or unauthenticated attributes): decryption ignores
	// them, IsEnvelope must not (they travel in clear).
	unread []unreadElement
}

// unreadElement is an element the envelope parser passed over.
type unreadElement struct {
	field string    // "originatorInfo", "recipientInfo", "unprotectedAttrs", "unauthAttrs"
	tag   casn1.Tag // recipient infos only
	size  int       // recipient infos only
}

// failure is the error returned for err while reading s: a read error of
// the stream as it is, anything else ErrDecrypt.
func (s *envelopeStream) failure(err error) error {
	if s != nil && s.b.err != nil {
		return fmt.Errorf("smime: read message: %w", s.b.err)
	}
	return ErrDecrypt
}

// readEnvelopeHead reads ContentInfo { EnvelopedData | AuthEnvelopedData }
// from r up to the start of its encrypted content.
func readEnvelopeHead(r io.Reader) (*envelopeStream, error) {
	b := newBERReader(r)
	s := &envelopeStream{b: b}
	ctype, f0, fci, err := readContentInfoHead(b)
	if err != nil {
		return s, err
	}
	switch {
	case ctype.Equal(oidEnvelopedData):
	case ctype.Equal(oidAuthEnvelopedData):
		s.env.auth = true
	default:
		return s, errStreamBER
	}
	s.outer = []frame{f0, fci}
	h, err := b.next(&f0)
	if err != nil || !h.is(universal, 16, true) {
		return s, orBER(err)
	}
	s.body = b.enter(h)
	if _, err := b.integer(&s.body); err != nil {
		return s, err
	}
	// originatorInfo [0] IMPLICIT OPTIONAL, then recipientInfos.
	h, err = b.next(&s.body)
	if err == nil && h.is(contextSpecific, 0, true) {
		s.unread = append(s.unread, unreadElement{field: "originatorInfo"})
		if err = b.skip(h); err == nil {
			h, err = b.next(&s.body)
		}
	}
	if err != nil || !h.is(universal, 17, true) {
		return s, orBER(err)
	}
	der, err := b.element(h)
	if err != nil {
		return s, err
	}
	if s.env.recipients, s.unread, err = parseRecipients(der, s.unread); err != nil {
		return s, err
	}
	// encryptedContentInfo: contentType, contentEncryptionAlgorithm,
	// encryptedContent [0] IMPLICIT OPTIONAL.
	if h, err = b.next(&s.body); err != nil || !h.is(universal, 16, true) {
		return s, orBER(err)
	}
	s.eci = b.enter(h)
	if s.env.contentType, err = b.oid(&s.eci); err != nil {
		return s, err
	}
	if h, err = b.next(&s.eci); err != nil {
		return s, err
	}
	der, err = b.element(h)
	if err != nil {
		return s, err
	}
	in := cryptobyte.String(der)
	var ok bool
	if s.env.contentAlg, ok = readAlgorithmIdentifier(&in); !ok || !in.Empty() {
		return s, errStreamBER
	}
	more, err := b.more(s.eci)
	if err != nil || !more {
		return s, err
	}
	h, err = b.header(&s.eci)
	if err != nil || !h.is(contextSpecific, 0, h.constructed) {
		return s, orBER(err)
	}
	s.content = b.octets(h)
	return s, nil
}

// finish reads what follows the content (s.content read to its end): the
// rest of the structure, which must be complete, and the mac and authAttrs
// of AuthEnvelopedData.
func (s *envelopeStream) finish() error {
	b := s.b
	if s.content.segmented && s.content.n == 0 {
		// A constructed encryptedContent without octets is none
		// (package ber leaves nothing of it).
		return errStreamBER
	}
	if more, err := b.more(s.eci); err != nil || more {
		return orBER(err)
	}
	// The elements after encryptedContentInfo, each optional but the mac.
	var h head
	next := func() (bool, error) {
		more, err := b.more(s.body)
		if err != nil || !more {
			return false, err
		}
		h, err = b.header(&s.body)
		return err == nil, err
	}
	more, err := next()
	if err != nil {
		return err
	}
	if s.env.auth {
		// authAttrs [1] IMPLICIT OPTIONAL, mac OCTET STRING,
		// unauthAttrs [2] IMPLICIT OPTIONAL.
		if more && h.is(contextSpecific, 1, true) {
			attrs, err := b.element(h)
			if err != nil {
				return err
			}
			s.authAttrs = append([]byte{byte(casn1.SET)}, attrs[1:]...)
			if more, err = next(); err != nil {
				return err
			}
		}
		if !more || h.class != universal || h.number != 4 {
			return errStreamBER
		}
		der, err := b.element(h)
		if err != nil {
			return err
		}
		in := cryptobyte.String(der)
		var mac cryptobyte.String
		if !in.ReadASN1(&mac, casn1.OCTET_STRING) || !in.Empty() {
			return errStreamBER
		}
		s.mac = mac
		if more, err = next(); err != nil {
			return err
		}
		if more && !h.is(contextSpecific, 2, true) {
			return errStreamBER
		}
	} else if more && !h.is(contextSpecific, 1, true) {
		// unprotectedAttrs [1] IMPLICIT OPTIONAL
		return errStreamBER
	}
	if more {
		field := "unprotectedAttrs"
		if s.env.auth {
			field = "unauthAttrs"
		}
		s.unread = append(s.unread, unreadElement{field: field})
		if err := b.skip(h); err != nil {
			return err
		}
		if more, err = next(); err != nil || more {
			return orBER(err)
		}
	}
	for _, f := range s.outer {
		if more, err := b.more(f); err != nil || more {
			return orBER(err)
		}
	}
	return b.trailer()
}

// decrypt decrypts and checks the content with cek, writing the plaintext
// to w. It reports whether the content decrypted and passed its check;
// an error is a failure to read the message or to write w.
func (s *envelopeStream) decrypt(cek []byte, w io.Writer) (bool, error) {
	var ok bool
	var err error
	if s.env.auth {
		ok, err = s.decryptGCM(cek, w)
	} else {
		ok, err = s.decryptCBC(cek, w)
	}
	if s.b.err != nil {
		return false, fmt.Errorf("smime: read message: %w", s.b.err)
	}
	if err != nil && !errors.Is(err, errStreamBER) && !errors.Is(err, errGCMTooLong) {
		return false, fmt.Errorf("smime: spool content: %w", err)
	}
	return ok && err == nil, nil
}

// decryptCBC decrypts CBC content, holding its last block back for the
// padding check at the end.
func (s *envelopeStream) decryptCBC(cek []byte, w io.Writer) (bool, error) {
	var block cipher.Block
	var err error
	if s.env.contentAlg.oid.Equal(oidDESEDE3CBC) {
		block, err = des.NewTripleDESCipher(cek)
	} else {
		block, err = aes.NewCipher(cek)
	}
	if err != nil {
		return false, nil
	}
	p := s.env.contentAlg.params
	var iv cryptobyte.String
	if p == nil || !p.ReadASN1(&iv, casn1.OCTET_STRING) || !p.Empty() || len(iv) != block.BlockSize() {
		return false, nil
	}
	bs := block.BlockSize()
	dec := cipher.NewCBCDecrypter(block, iv)
	in := make([]byte, 32<<10)
	out := make([]byte, len(in))
	held := 0 // bytes of in not yet decrypted (at most a block and a bit)
	var total int64
	for {
		n, rerr := s.content.Read(in[held:])
		held += n
		total += int64(n)
		// Decrypt whole blocks, keeping the last one back while more
		// may come.
		ready := held / bs * bs
		if rerr == nil && ready == held {
			ready -= bs
		}
		if rerr == nil && ready > 0 {
			dec.CryptBlocks(out[:ready], in[:ready])
			if _, err := w.Write(out[:ready]); err != nil {
				return false, err
			}
			held = copy(in, in[ready:held])
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return false, rerr
		}
	}
	if err := s.finish(); err != nil {
		return false, err
	}
	if total == 0 || total%int64(bs) != 0 || held%bs != 0 || held == 0 {
		return false, nil
	}
	pt := out[:held]
	dec.CryptBlocks(pt, in[:held])
	// PKCS#7 padding, checked without data-dependent branches.
	n := int(pt[len(pt)-1])
	good := subtle.ConstantTimeLessOrEq(1, n) & subtle.ConstantTimeLessOrEq(n, bs)
	for i := 1; i <= bs; i++ {
		inPad := subtle.ConstantTimeLessOrEq(i, n)
		eq := subtle.ConstantTimeByteEq(pt[len(pt)-i], byte(n))
		good &= subtle.ConstantTimeSelect(inPad, eq, 1)
	}
	if good != 1 {
		return false, nil
	}
	if _, err := w.Write(pt[:len(pt)-n]); err != nil {
		return false, err
	}
	return true, nil
}

// decryptGCM opens AES-GCM content (RFC 5084) as a stream; authAttrs,
// when present, are the AAD. The tag is checked once everything was read:
// what was written to w before is plaintext the caller must not use
// unless decryptGCM reports success.
func (s *envelopeStream) decryptGCM(cek []byte, w io.Writer) (bool, error) {
	block, err := aes.NewCipher(cek)
	if err != nil {
		return false, nil
	}
	// GCMParameters ::= SEQUENCE { aes-nonce OCTET STRING,
	//                              aes-ICVlen INTEGER DEFAULT 12 }
	p := s.env.contentAlg.params
	var seq, nonce cryptobyte.String
	icvLen := 12
	if p == nil || !p.ReadASN1(&seq, casn1.SEQUENCE) || !p.Empty() ||
		!seq.ReadASN1(&nonce, casn1.OCTET_STRING) {
		return false, nil
	}
	if !seq.Empty() && (!seq.ReadASN1Integer(&icvLen) || !seq.Empty()) {
		return false, nil
	}
	if icvLen < 12 || icvLen > 16 || len(nonce) == 0 || len(nonce) != 12 && icvLen != 16 {
		return false, nil
	}
	o := newGCMOpener(block, nonce)
	if err := o.copy(w, s.content); err != nil {
		return false, err
	}
	if err := s.finish(); err != nil {
		return false, err
	}
	return len(s.mac) == icvLen && o.check(s.authAttrs, s.mac), nil
}

// parseRecipients parses the DER of a recipientInfos SET, adding the
// recipient infos it passes over to unread.
func parseRecipients(der []byte, unread []unreadElement) ([]keyTransRecipient, []unreadElement, error) {
	in := cryptobyte.String(der)
	var ris cryptobyte.String
	if !in.ReadASN1(&ris, casn1.SET) || !in.Empty() {
		return nil, unread, errStreamBER
	}
	var out []keyTransRecipient
	for !ris.Empty() {
		var ri cryptobyte.String
		var tag casn1.Tag
		if !ris.ReadAnyASN1Element(&ri, &tag) {
			return nil, unread, errStreamBER
		}
		if tag != casn1.SEQUENCE {
			// kari [1], kekri [2], pwri [3], ori [4]: not ours to use.
			unread = append(unread, unreadElement{"recipientInfo", tag, len(ri)})
			continue
		}
		var ktri cryptobyte.String
		var v int
		var r keyTransRecipient
		var ok bool
		if !ri.ReadASN1(&ktri, casn1.SEQUENCE) || !ktri.ReadASN1Integer(&v) {
			return nil, unread, errStreamBER
		}
		if r.id, ok = readCertificateID(&ktri); !ok {
			return nil, unread, errStreamBER
		}
		if r.alg, ok = readAlgorithmIdentifier(&ktri); !ok {
			return nil, unread, errStreamBER
		}
		var ek cryptobyte.String
		if !ktri.ReadASN1(&ek, casn1.OCTET_STRING) || !ktri.Empty() {
			return nil, unread, errStreamBER
		}
		r.encryptedKey = ek
		out = append(out, r)
	}
	return out, unread, nil
}

// contentCipher names the content-encryption algorithm and its key length.
func contentCipher(env *envelope) (string, int, bool) {
	oid := env.contentAlg.oid
	if env.auth {
		switch {
		case oid.Equal(oidAES128GCM):
			return "aes-128-gcm", 16, true
		case oid.Equal(oidAES192GCM):
			return "aes-192-gcm", 24, true
		case oid.Equal(oidAES256GCM):
			return "aes-256-gcm", 32, true
		}
		return "", 0, false
	}
	switch {
	case oid.Equal(oidAES128CBC):
		return "aes-128-cbc", 16, true
	case oid.Equal(oidAES192CBC):
		return "aes-192-cbc", 24, true
	case oid.Equal(oidAES256CBC):
		return "aes-256-cbc", 32, true
	case oid.Equal(oidDESEDE3CBC):
		return "des-ede3-cbc", 24, true
	}
	return "", 0, false
}

// unwrapKey decrypts the content-encryption key. Whatever goes wrong in
// the RSA step (padding, length), the result is a random key of the right
// length, so that processing continues into content decryption exactly as
// with a good key (RFC 3218 section 2.3.2). valid is 1 when the RSA step
// succeeded, 0 otherwise, computed without branching on secret data; the
// caller consults it only after content decryption, so that a random key
// that happens to give valid CBC padding is still a failure and never
// yields garbage plaintext. ok is false only for an unknown algorithm or
// malformed parameters, which are visible in the message itself.
func unwrapKey(priv *rsa.PrivateKey, r keyTransRecipient, keyLen int) (cek []byte, alg string, valid int, ok bool) {
	cek = make([]byte, keyLen)
	if _, err := rand.Read(cek); err != nil {
		return nil, "", 0, false
	}
	switch {
	case r.alg.oid.Equal(oidRSAEncryption):
		orig := append([]byte(nil), cek...)
		// DecryptPKCS1v15SessionKey leaves cek untouched, in constant
		// time, when the padding is wrong or the length differs. Its
		// early errors (ciphertext size, value above the modulus) depend
		// only on public data; the random key is used then as well.
		//lint:ignore SA1019 PKCS#1 v1.5 key transport is what S/MIME clients send.
		_ = rsa.DecryptPKCS1v15SessionKey(nil, priv, r.encryptedKey, cek)
		return cek, "rsa-pkcs1v15", 1 - subtle.ConstantTimeCompare(orig, cek), true
	case r.alg.oid.Equal(oidRSAESOAEP):
		h, mgf, label, ok := parseOAEPParams(r.alg.params)
		if !ok {
			return nil, "", 0, false
		}
		key, err := priv.Decrypt(nil, r.encryptedKey, &rsa.OAEPOptions{Hash: h, MGFHash: mgf, Label: label})
		if err == nil && len(key) == keyLen {
			copy(cek, key)
			valid = 1
		}
		return cek, "rsa-oaep-" + hashName(h), valid, true
	}
	return nil, "", 0, false
}

// parseOAEPParams parses RSAES-OAEP-params (RFC 8017 A.2.1, RFC 4055).
func parseOAEPParams(p cryptobyte.String) (h, mgf crypto.Hash, label []byte, ok bool) {
	h, mgf = crypto.SHA1, crypto.SHA1
	if p == nil {
		return h, mgf, nil, true
	}
	var seq cryptobyte.String
	if !p.ReadASN1(&seq, casn1.SEQUENCE) || !p.Empty() {
		return 0, 0, nil, false
	}
	if seq.PeekASN1Tag(casn1.Tag(0).Constructed().ContextSpecific()) {
		var e cryptobyte.String
		if !seq.ReadASN1(&e, casn1.Tag(0).Constructed().ContextSpecific()) {
			return 0, 0, nil, false
		}
		a, ok := readAlgorithmIdentifier(&e)
		if !ok || !e.Empty() {
			return 0, 0, nil, false
		}
		if h, ok = digestByOID(a.oid); !ok || h == crypto.MD5 {
			return 0, 0, nil, false
		}
	}
	if seq.PeekASN1Tag(casn1.Tag(1).Constructed().ContextSpecific()) {
		var ok bool
		if mgf, ok = readMGF1(&seq, 1); !ok {
			return 0, 0, nil, false
		}
	}
	if seq.PeekASN1Tag(casn1.Tag(2).Constructed().ContextSpecific()) {
		var e cryptobyte.String
		if !seq.ReadASN1(&e, casn1.Tag(2).Constructed().ContextSpecific()) {
			return 0, 0, nil, false
		}
		a, ok := readAlgorithmIdentifier(&e)
		if !ok || !e.Empty() || !a.oid.Equal(oidPSpecified) {
			return 0, 0, nil, false
		}
		if a.params != nil {
			var l cryptobyte.String
			if !a.params.ReadASN1(&l, casn1.OCTET_STRING) {
				return 0, 0, nil, false
			}
			if len(l) > 0 {
				label = l
			}
		}
	}
	if !seq.Empty() {
		return 0, 0, nil, false
	}
	return h, mgf, label, true
}

// readMGF1 reads [n] EXPLICIT AlgorithmIdentifier { id-mgf1, hash AlgId }.
func readMGF1(s *cryptobyte.String, n uint8) (crypto.Hash, bool) {
	var e cryptobyte.String
	if !s.ReadASN1(&e, casn1.Tag(n).Constructed().ContextSpecific()) {
		return 0, false
	}
	a, ok := readAlgorithmIdentifier(&e)
	if !ok || !e.Empty() || !a.oid.Equal(oidMGF1) || a.params == nil {
		return 0, false
	}
	inner, ok := readAlgorithmIdentifier(&a.params)
	if !ok || !a.params.Empty() {
		return 0, false
	}
	h, ok := digestByOID(inner.oid)
	if !ok || h == crypto.MD5 {
		return 0, false
	}
	return h, true
}

// hashName is a short lower-case hash name for result strings.
func hashName(h crypto.Hash) string {
	switch h {
	case crypto.MD5:
		return "md5"
	case crypto.SHA1:
		return "sha1"
	case crypto.SHA224:
		return "sha224"
	case crypto.SHA256:
		return "sha256"
	case crypto.SHA384:
		return "sha384"
	case crypto.SHA512:
		return "sha512"
	}
	return "unknown"
}
