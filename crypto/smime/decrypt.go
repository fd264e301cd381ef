package smime

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/rand"
	"crypto/rsa"
	"crypto/subtle"
	"encoding/asn1"
	"errors"

	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"
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

// envelope is a parsed EnvelopedData or AuthEnvelopedData.
type envelope struct {
	auth        bool
	recipients  []keyTransRecipient
	contentType asn1.ObjectIdentifier
	contentAlg  algorithmIdentifier
	ciphertext  []byte
	authAttrs   []byte // DER of authAttrs with the SET OF tag, for the AAD
	mac         []byte
	// unread are the elements the parser passed over without reading
	// them (originatorInfo, recipient infos other than key transport,
	// unprotected or unauthenticated attributes): decryption ignores
	// them, IsEnvelope must not (they travel in clear).
	unread []unreadElement
}

// unreadElement is an element parseEnvelope passed over.
type unreadElement struct {
	field string // "originatorInfo", "recipientInfo", "unprotectedAttrs", "unauthAttrs"
	tag   casn1.Tag
	size  int
}

// Decrypt decrypts a CMS EnvelopedData or AuthEnvelopedData (RFC 5083/5084,
// AES-GCM) addressed to one of ids, given as BER or DER bytes (the
// base64-decoded body of an application/pkcs7-mime part). It returns the
// inner content, normally a MIME entity.
//
// Key transport: RSA PKCS#1 v1.5 (with RFC 3218 implicit rejection) and
// RSA-OAEP (any of SHA-1/224/256/384/512, MGF1). Content: AES-128/192/256
// in CBC or GCM, and 3DES-CBC for old clients. Key-agreement, KEK and
// password recipients are skipped, not refused.
//
// Every failure returns ErrDecrypt, except ErrNotForUs when no recipient
// names one of our certificates. For AuthEnvelopedData the tag is checked
// before anything is returned.
func Decrypt(der []byte, ids []Identity) ([]byte, DecryptInfo, error) {
	env, ok := parseEnvelope(der)
	if !ok {
		return nil, DecryptInfo{}, ErrDecrypt
	}
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
	if len(cands) == 0 {
		return nil, DecryptInfo{}, ErrNotForUs
	}
	cipherName, keyLen, ok := contentCipher(env)
	if !ok {
		return nil, DecryptInfo{}, ErrDecrypt
	}
	for _, c := range cands {
		priv, isRSA := ids[c.idx].Key.(*rsa.PrivateKey)
		if !isRSA {
			continue
		}
		cek, keyAlg, valid, ok := unwrapKey(priv, c.r, keyLen)
		if !ok {
			continue
		}
		content, ok := decryptContent(env, cek)
		if !ok || valid != 1 {
			continue
		}
		cert := ids[c.idx].Cert
		return content, DecryptInfo{
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

// parseEnvelope parses ContentInfo { EnvelopedData | AuthEnvelopedData }.
func parseEnvelope(ber []byte) (*envelope, bool) {
	ctype, content, ok := readContentInfo(ber)
	if !ok {
		return nil, false
	}
	env := &envelope{}
	switch {
	case ctype.Equal(oidEnvelopedData):
	case ctype.Equal(oidAuthEnvelopedData):
		env.auth = true
	default:
		return nil, false
	}
	var body, ris, eci cryptobyte.String
	var version int
	if !content.ReadASN1(&body, casn1.SEQUENCE) || !content.Empty() ||
		!body.ReadASN1Integer(&version) {
		return nil, false
	}
	// originatorInfo [0] IMPLICIT OPTIONAL
	if !env.skipOptional(&body, "originatorInfo", casn1.Tag(0).Constructed().ContextSpecific()) ||
		!body.ReadASN1(&ris, casn1.SET) {
		return nil, false
	}
	for !ris.Empty() {
		var ri cryptobyte.String
		var tag casn1.Tag
		if !ris.ReadAnyASN1Element(&ri, &tag) {
			return nil, false
		}
		if tag != casn1.SEQUENCE {
			// kari [1], kekri [2], pwri [3], ori [4]: not ours to use.
			env.unread = append(env.unread, unreadElement{"recipientInfo", tag, len(ri)})
			continue
		}
		var ktri cryptobyte.String
		var v int
		var r keyTransRecipient
		if !ri.ReadASN1(&ktri, casn1.SEQUENCE) || !ktri.ReadASN1Integer(&v) {
			return nil, false
		}
		if r.id, ok = readCertificateID(&ktri); !ok {
			return nil, false
		}
		if r.alg, ok = readAlgorithmIdentifier(&ktri); !ok {
			return nil, false
		}
		var ek cryptobyte.String
		if !ktri.ReadASN1(&ek, casn1.OCTET_STRING) || !ktri.Empty() {
			return nil, false
		}
		r.encryptedKey = ek
		env.recipients = append(env.recipients, r)
	}
	if !body.ReadASN1(&eci, casn1.SEQUENCE) || !eci.ReadASN1ObjectIdentifier(&env.contentType) {
		return nil, false
	}
	if env.contentAlg, ok = readAlgorithmIdentifier(&eci); !ok {
		return nil, false
	}
	if !eci.Empty() {
		if env.ciphertext, ok = readOctets(&eci, casn1.Tag(0).ContextSpecific()); !ok || !eci.Empty() {
			return nil, false
		}
	}
	if env.auth {
		// authAttrs [1] IMPLICIT OPTIONAL, mac OCTET STRING,
		// unauthAttrs [2] IMPLICIT OPTIONAL.
		if body.PeekASN1Tag(casn1.Tag(1).Constructed().ContextSpecific()) {
			var attrs cryptobyte.String
			if !body.ReadASN1Element(&attrs, casn1.Tag(1).Constructed().ContextSpecific()) {
				return nil, false
			}
			env.authAttrs = append([]byte{byte(casn1.SET)}, attrs[1:]...)
		}
		var mac cryptobyte.String
		if !body.ReadASN1(&mac, casn1.OCTET_STRING) {
			return nil, false
		}
		env.mac = mac
		if !env.skipOptional(&body, "unauthAttrs", casn1.Tag(2).Constructed().ContextSpecific()) {
			return nil, false
		}
	} else if !env.skipOptional(&body, "unprotectedAttrs", casn1.Tag(1).Constructed().ContextSpecific()) {
		return nil, false
	}
	if !body.Empty() || env.ciphertext == nil {
		return nil, false
	}
	return env, true
}

// skipOptional skips an optional element of s with the given tag,
// recording it in env.unread when present.
func (env *envelope) skipOptional(s *cryptobyte.String, field string, tag casn1.Tag) bool {
	var elem cryptobyte.String
	var present bool
	if !s.ReadOptionalASN1(&elem, &present, tag) {
		return false
	}
	if present {
		env.unread = append(env.unread, unreadElement{field, tag, len(elem)})
	}
	return true
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

// decryptContent decrypts and checks the content with cek.
func decryptContent(env *envelope, cek []byte) ([]byte, bool) {
	if env.auth {
		return decryptGCM(env, cek)
	}
	var block cipher.Block
	var err error
	if env.contentAlg.oid.Equal(oidDESEDE3CBC) {
		block, err = des.NewTripleDESCipher(cek)
	} else {
		block, err = aes.NewCipher(cek)
	}
	if err != nil {
		return nil, false
	}
	p := env.contentAlg.params
	var iv cryptobyte.String
	if p == nil || !p.ReadASN1(&iv, casn1.OCTET_STRING) || !p.Empty() || len(iv) != block.BlockSize() {
		return nil, false
	}
	ct := env.ciphertext
	bs := block.BlockSize()
	if len(ct) == 0 || len(ct)%bs != 0 {
		return nil, false
	}
	pt := make([]byte, len(ct))
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(pt, ct)
	// PKCS#7 padding, checked without data-dependent branches.
	n := int(pt[len(pt)-1])
	good := subtle.ConstantTimeLessOrEq(1, n) & subtle.ConstantTimeLessOrEq(n, bs)
	for i := 1; i <= bs; i++ {
		inPad := subtle.ConstantTimeLessOrEq(i, n)
		eq := subtle.ConstantTimeByteEq(pt[len(pt)-i], byte(n))
		good &= subtle.ConstantTimeSelect(inPad, eq, 1)
	}
	if good != 1 {
		return nil, false
	}
	return pt[:len(pt)-n], true
}

// decryptGCM opens AES-GCM content (RFC 5084); the tag is verified before
// any plaintext is returned, and authAttrs, when present, are the AAD.
func decryptGCM(env *envelope, cek []byte) ([]byte, bool) {
	block, err := aes.NewCipher(cek)
	if err != nil {
		return nil, false
	}
	// GCMParameters ::= SEQUENCE { aes-nonce OCTET STRING,
	//                              aes-ICVlen INTEGER DEFAULT 12 }
	p := env.contentAlg.params
	var seq, nonce cryptobyte.String
	icvLen := 12
	if p == nil || !p.ReadASN1(&seq, casn1.SEQUENCE) || !p.Empty() ||
		!seq.ReadASN1(&nonce, casn1.OCTET_STRING) {
		return nil, false
	}
	if !seq.Empty() && (!seq.ReadASN1Integer(&icvLen) || !seq.Empty()) {
		return nil, false
	}
	if icvLen < 12 || icvLen > 16 || len(env.mac) != icvLen || len(nonce) == 0 {
		return nil, false
	}
	var aead cipher.AEAD
	switch {
	case len(nonce) == 12:
		aead, err = cipher.NewGCMWithTagSize(block, icvLen)
	case icvLen == 16:
		aead, err = cipher.NewGCMWithNonceSize(block, len(nonce))
	default:
		return nil, false
	}
	if err != nil {
		return nil, false
	}
	sealed := make([]byte, 0, len(env.ciphertext)+len(env.mac))
	sealed = append(append(sealed, env.ciphertext...), env.mac...)
	pt, err := aead.Open(nil, nonce, sealed, env.authAttrs)
	if err != nil {
		return nil, false
	}
	return pt, true
}
