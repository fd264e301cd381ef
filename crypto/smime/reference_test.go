package smime

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/rsa"
	"crypto/subtle"
	"crypto/x509"
	"encoding/asn1"

	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// The in-memory CMS readers that the stream readers replaced (normalize
// the whole message with ToDER, then parse it with cryptobyte), kept as
// references: the fuzzers check that the stream readers read every input
// as these do.

// refEnvelope is a parsed EnvelopedData or AuthEnvelopedData.
type refEnvelope struct {
	auth        bool
	recipients  []keyTransRecipient
	contentType asn1.ObjectIdentifier
	contentAlg  algorithmIdentifier
	ciphertext  []byte
	authAttrs   []byte // DER of authAttrs with the SET OF tag, for the AAD
	mac         []byte
}

func referenceDecrypt(der []byte, ids []Identity) ([]byte, DecryptInfo, error) {
	env, ok := referenceParseEnvelope(der)
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
	cipherName, keyLen, ok := contentCipher(&envelope{auth: env.auth, contentAlg: env.contentAlg})
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
		content, ok := referenceDecryptContent(env, cek)
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

// referenceParseEnvelope parses ContentInfo { EnvelopedData | AuthEnvelopedData }.
func referenceParseEnvelope(ber []byte) (*refEnvelope, bool) {
	ctype, content, ok := readContentInfo(ber)
	if !ok {
		return nil, false
	}
	env := &refEnvelope{}
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
	if !body.SkipOptionalASN1(casn1.Tag(0).Constructed().ContextSpecific()) ||
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
		if !body.SkipOptionalASN1(casn1.Tag(2).Constructed().ContextSpecific()) {
			return nil, false
		}
	} else if !body.SkipOptionalASN1(casn1.Tag(1).Constructed().ContextSpecific()) {
		return nil, false
	}
	if !body.Empty() || env.ciphertext == nil {
		return nil, false
	}
	return env, true
}

// referenceDecryptContent decrypts and checks the content with cek.
func referenceDecryptContent(env *refEnvelope, cek []byte) ([]byte, bool) {
	if env.auth {
		return referenceDecryptGCM(env, cek)
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

// referenceDecryptGCM opens AES-GCM content (RFC 5084); the tag is verified before
// any plaintext is returned, and authAttrs, when present, are the AAD.
func referenceDecryptGCM(env *refEnvelope, cek []byte) ([]byte, bool) {
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

// referenceParseSignedData parses ContentInfo { SignedData } and returns
// its content too (nil when detached).
func referenceParseSignedData(ber []byte) (*signedData, []byte, bool) {
	ctype, ci, ok := readContentInfo(ber)
	if !ok || !ctype.Equal(oidSignedData) {
		return nil, nil, false
	}
	sd := &signedData{}
	var content []byte
	var body, digestAlgs, eci, sis cryptobyte.String
	var version int
	if !ci.ReadASN1(&body, casn1.SEQUENCE) || !ci.Empty() ||
		!body.ReadASN1Integer(&version) ||
		!body.ReadASN1(&digestAlgs, casn1.SET) ||
		!body.ReadASN1(&eci, casn1.SEQUENCE) ||
		!eci.ReadASN1ObjectIdentifier(&sd.contentType) {
		return nil, nil, false
	}
	if !eci.Empty() {
		var e cryptobyte.String
		if !eci.ReadASN1(&e, casn1.Tag(0).Constructed().ContextSpecific()) || !eci.Empty() {
			return nil, nil, false
		}
		c, ok := readOctets(&e, casn1.OCTET_STRING)
		if !ok || !e.Empty() {
			return nil, nil, false
		}
		content = c
		if content == nil {
			content = []byte{}
		}
	}
	if body.PeekASN1Tag(casn1.Tag(0).Constructed().ContextSpecific()) {
		var certs cryptobyte.String
		if !body.ReadASN1(&certs, casn1.Tag(0).Constructed().ContextSpecific()) {
			return nil, nil, false
		}
		for !certs.Empty() {
			var c cryptobyte.String
			var tag casn1.Tag
			if !certs.ReadAnyASN1Element(&c, &tag) {
				return nil, nil, false
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
		return nil, nil, false
	}
	for !sis.Empty() {
		var s cryptobyte.String
		var si signerInfo
		var v int
		if !sis.ReadASN1(&s, casn1.SEQUENCE) || !s.ReadASN1Integer(&v) {
			return nil, nil, false
		}
		if si.id, ok = readCertificateID(&s); !ok {
			return nil, nil, false
		}
		if si.digestAlg, ok = readAlgorithmIdentifier(&s); !ok {
			return nil, nil, false
		}
		if s.PeekASN1Tag(casn1.Tag(0).Constructed().ContextSpecific()) {
			var attrs cryptobyte.String
			if !s.ReadASN1Element(&attrs, casn1.Tag(0).Constructed().ContextSpecific()) {
				return nil, nil, false
			}
			si.signedAttrs = append([]byte{byte(casn1.SET)}, attrs[1:]...)
		}
		if si.sigAlg, ok = readAlgorithmIdentifier(&s); !ok {
			return nil, nil, false
		}
		var sig cryptobyte.String
		if !s.ReadASN1(&sig, casn1.OCTET_STRING) ||
			!s.SkipOptionalASN1(casn1.Tag(1).Constructed().ContextSpecific()) || !s.Empty() {
			return nil, nil, false
		}
		si.signature = sig
		sd.signers = append(sd.signers, si)
	}
	return sd, content, true
}

// readOctets reads an OCTET STRING, or an IMPLICIT [n] OCTET STRING given
// its primitive tag, in primitive or (BER) constructed form.
func readOctets(s *cryptobyte.String, tag casn1.Tag) ([]byte, bool) {
	if s.PeekASN1Tag(tag) {
		var v cryptobyte.String
		if !s.ReadASN1(&v, tag) {
			return nil, false
		}
		return v, true
	}
	var c cryptobyte.String
	if !s.ReadASN1(&c, tag.Constructed()) {
		return nil, false
	}
	var out []byte
	for !c.Empty() {
		var seg cryptobyte.String
		if !c.ReadASN1(&seg, casn1.OCTET_STRING) {
			return nil, false
		}
		out = append(out, seg...)
	}
	return out, true
}

// readContentInfo reads a top-level ContentInfo from BER input and returns
// its content type and the content ([0] EXPLICIT) body.
func readContentInfo(ber []byte) (asn1.ObjectIdentifier, cryptobyte.String, bool) {
	der, err := toDER(ber)
	if err != nil {
		return nil, nil, false
	}
	in := cryptobyte.String(der)
	var ci, content cryptobyte.String
	var oid asn1.ObjectIdentifier
	if !in.ReadASN1(&ci, casn1.SEQUENCE) || !in.Empty() ||
		!ci.ReadASN1ObjectIdentifier(&oid) ||
		!ci.ReadASN1(&content, casn1.Tag(0).Constructed().ContextSpecific()) ||
		!ci.Empty() {
		return nil, nil, false
	}
	return oid, content, true
}
