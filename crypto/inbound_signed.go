package crypto

import "github.com/cryptmilter/cryptmilter/crypto/mime"

// signedContent finishes a verified multipart/signed entity e: with
// unwrap_signed the signed part is shown instead of e, and a signature
// over encrypted content is followed into the encryption.
func (a *analyzer) signedContent(e *mime.Entity, res *inboundResult) {
	if a.e.pol.Inbound.UnwrapSigned {
		res.content = e.Parts[0]
	}
	a.encryptedInsideSignature(e.Parts[0], res)
}

// encryptedInsideSignature handles encrypt-then-sign: the signature covers
// the ciphertext, not the plaintext the reader will see, so it is reported
// as partial with reason covers-ciphertext (the signer may never have seen
// the plaintext), and the content is decrypted for display.
func (a *analyzer) encryptedInsideSignature(signed *mime.Entity, res *inboundResult) {
	if res.enc.status != encNone {
		return // already inside a decryption: nested encryption is not followed
	}
	var inner *mime.Entity
	var err error
	switch {
	case isSMIMEEnveloped(signed):
		inner, err = a.decryptSMIME(signed, res)
	case isPGPEncrypted(signed):
		inner, err = a.decryptPGPMIME(signed, res)
	default:
		return
	}
	if err != nil {
		a.fail(err)
		return
	}
	if inner == nil {
		return
	}
	if res.sig.status == sigValid {
		res.sig.status, res.sig.reason = sigPartial, joinReason(res.sig.reason, "covers-ciphertext")
	}
	res.content = inner
	res.restore = protectedHeaders(inner)
}
