package crypto

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/cryptmilter/cryptmilter/crypto/mime"
	"github.com/cryptmilter/cryptmilter/crypto/verdict"
	"github.com/cryptmilter/cryptmilter/keystore"
)

// This file walks a message's Cryptographic Envelope (RFC 9787): from the
// MIME root, every encryption and signature layer in turn, in any order,
// up to maxLayers. Each layer is decrypted or verified by a protocol
// adapter that returns a step (a value); the walk composes the steps into
// an envelope, and result turns the envelope into one verdict.

// maxLayers bounds the layers followed (sign-encrypt-sign is three).
const maxLayers = 6

// analyzer carries one message's analysis.
type analyzer struct {
	e    *Engine
	in   *Input
	keys *keystore.Snapshot
	lim  mime.Limits
	// attempted is set once a decryption was tried: the reply then waits
	// for the decryption deadline.
	attempted bool
	// ambiguous is set when the message's structure is ambiguous (for
	// the log line).
	ambiguous error
	// held are the spool buffers and plaintexts the analysis made, closed
	// when the message is done; srcs are the readers every parse tree
	// reads through (see stickyAt).
	held []io.Closer
	srcs []*stickyAt
}

// step is what one layer gave.
type step struct {
	// enc is set for an encryption layer.
	enc *verdict.Encryption
	// failure: decryption for the gateway failed (the uniform outcome);
	// notForUs: the layer is encrypted to other keys only.
	failure, notForUs bool
	// authenticated: the ciphertext had an integrity check.
	authenticated bool
	// sig is the layer's signature (for an encryption layer, a signature
	// inside the same OpenPGP message, over the plaintext).
	sig *verdict.Signature
	// next is the content inside the layer; nil ends the walk there.
	next *mime.Entity
	// opaque: the content can only be shown unwrapped (opaque
	// signed-data, an inline signed message).
	opaque bool
	// show, when set, is shown instead of the layer itself when it is not
	// unwrapped (a cleartext-signed block without its unsigned parts).
	show *mime.Entity
}

// sigAt is a signature, the number of encryption layers above it, and
// the parse tree its signed content is in (an index into trees).
type sigAt struct {
	sig   verdict.Signature
	depth int
	tree  int
}

// envelope is what the walk found.
type envelope struct {
	encs []verdict.Encryption
	// unauthenticated: a decrypted layer had no integrity check.
	unauthenticated bool
	sigs            []sigAt
	// display is what the message shows afterwards (nil: as it came).
	display *mime.Entity
	// payload is the innermost content; layers are every entity the walk
	// went through, for the ambiguity check.
	payload *mime.Entity
	layers  []*mime.Entity
	// trees are the roots of every parse: the message, then each
	// decrypted or opaque-signed content.
	trees []*mime.Entity
	// failed is the failed (or not-for-gateway) encryption layer.
	failed                 *verdict.Encryption
	failure, authenticated bool
	innerNotForUs, tooDeep bool
}

// walk follows the layers from root.
func (a *analyzer) walk(ctx context.Context, root *mime.Entity) (*envelope, error) {
	env := &envelope{payload: root, trees: []*mime.Entity{root}}
	cur := root
	depth := 0
	for n := 0; ; n++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		l := layerOf(cur)
		if l.kind == layerNone {
			break
		}
		if n == maxLayers {
			env.tooDeep = true
			break
		}
		env.layers = append(env.layers, cur)
		if err := a.keysReadable(l.kind); err != nil {
			return nil, err
		}
		var st step
		var err error
		if l.kind.encryption() {
			a.attempted = true
			st, err = a.decrypt(cur, l)
		} else {
			st, err = a.verify(cur, l)
		}
		if err != nil {
			return nil, err
		}
		if st.enc != nil {
			if st.failure || st.notForUs && depth == 0 {
				// Nothing decrypted is shown: the message passes as it came.
				// The failure counts as one of authenticated ciphertext
				// (which on_decrypt_error may refuse) only when every layer
				// above it was authenticated too: under an unauthenticated
				// (CBC) layer, what reached this layer is whatever an
				// attacker's edits of that ciphertext made of it, and a
				// different reply would be a format oracle on it.
				env.failed, env.failure = st.enc, st.failure
				env.authenticated = st.authenticated && !env.unauthenticated
				env.display, env.payload = nil, root
				return env, nil
			}
			if st.notForUs {
				// Ciphertext inside the gateway's layer is for someone
				// else (end-to-end to a local user): shown as it is.
				env.innerNotForUs = true
				break
			}
			env.encs = append(env.encs, *st.enc)
			env.unauthenticated = env.unauthenticated || !st.authenticated
			depth++
			env.trees = append(env.trees, st.next)
			if st.sig != nil {
				env.sigs = append(env.sigs, sigAt{*st.sig, depth, len(env.trees) - 1})
			}
			env.display, cur = st.next, st.next
			continue
		}
		env.sigs = append(env.sigs, sigAt{*st.sig, depth, len(env.trees) - 1})
		if st.next == nil {
			break
		}
		if st.opaque && st.next != nil {
			env.trees = append(env.trees, st.next)
		}
		shown := env.display == cur || env.display == nil && cur == root
		switch {
		case st.opaque || a.e.pol.Inbound.UnwrapSigned && shown:
			env.display = st.next
		case st.show != nil && shown:
			env.display = st.show
		}
		cur = st.next
	}
	env.payload = cur
	return env, nil
}

// keysReadable fails when the keys a layer of kind needs could not be
// read (keystore.Snapshot.Unavailable): the message is then tempfailed
// before anything is tried, so that a degraded keystore neither delivers
// mail undecrypted nor gives a verdict it could not check, and so that
// the reply does not depend on whether the ciphertext would decrypt.
func (a *analyzer) keysReadable(k layerKind) error {
	if a.keys == nil {
		return nil
	}
	var areas []keystore.Area
	switch {
	case k.encryption() && k.protocol() == OpenPGP:
		areas = []keystore.Area{keystore.AreaGatewayOpenPGP}
	case k.encryption():
		areas = []keystore.Area{keystore.AreaGatewaySMIME}
	case k.protocol() == OpenPGP:
		areas = []keystore.Area{keystore.AreaOpenPGP}
	default:
		areas = []keystore.Area{keystore.AreaCerts, keystore.AreaCA, keystore.AreaCRL}
	}
	for _, area := range areas {
		if err := a.keys.Unavailable(area); err != nil {
			return fmt.Errorf("crypto: inbound: %w", err)
		}
	}
	return nil
}

// decrypt runs the adapter for an encryption layer. Decrypted content
// that cannot be parsed within the limits fails like any decryption: a
// reply that told it apart would tell the sender something about the
// plaintext.
func (a *analyzer) decrypt(e *mime.Entity, l layer) (step, error) {
	var st step
	var err error
	switch l.kind {
	case layerPGPMIME, layerPGPExchange:
		st, err = a.decryptPGPMIME(l)
	case layerPGPInline:
		st, err = a.decryptPGPInline(e, l)
	default:
		st, err = a.decryptCMS(e, l)
	}
	if errors.Is(err, mime.ErrLimits) {
		return failedStep(l.kind.protocol(), l.kind != layerCMSEnveloped), nil
	}
	if err == nil && st.enc != nil && st.enc.Status == verdict.Decrypted && l.kind == layerPGPExchange {
		st.enc.Reason = verdict.Reason(st.enc.Reason, "exchange-repaired")
	}
	return st, err
}

// failedStep is the uniform outcome of a failed decryption.
func failedStep(p Protocol, authenticated bool) step {
	return step{enc: &verdict.Encryption{Status: verdict.EncFailed, Protocol: p, Reason: "decrypt-failed"},
		failure: true, authenticated: authenticated}
}

// notForUsStep is the outcome for ciphertext encrypted to other keys.
func notForUsStep(p Protocol) step {
	return step{enc: &verdict.Encryption{Status: verdict.EncFailed, Protocol: p, Reason: "not-for-gateway"}, notForUs: true}
}

// verify runs the adapter for a signature layer.
func (a *analyzer) verify(e *mime.Entity, l layer) (step, error) {
	switch l.kind {
	case layerPGPSigned:
		return a.verifyPGPMIME(e), nil
	case layerPGPInlineSigned:
		return a.verifyPGPInline(e, l)
	case layerPGPCleartext:
		return a.verifyCleartext(e, l)
	case layerCMSDetached:
		return a.verifyCMSDetached(e)
	}
	return a.verifyCMSOpaque(e)
}

// malformedSig is the verdict on a signature layer that cannot be read.
func malformedSig(p Protocol) *verdict.Signature {
	return &verdict.Signature{Status: verdict.Bad, Protocol: p, Reason: "malformed"}
}
