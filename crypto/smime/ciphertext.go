package smime

import "github.com/cryptmilter/cryptmilter/internal/entropy"

// IsEnvelope reports whether der is exactly one complete CMS EnvelopedData
// or AuthEnvelopedData (RFC 5652, RFC 5083) with at least one recipient
// and encrypted content that looks like ciphertext. Outbound mail that is
// "already encrypted" must pass this before it is sent as it is: data that
// merely begins with the right OID is not enough.
func IsEnvelope(der []byte) bool {
	norm, err := toDER(der)
	if err != nil {
		return false
	}
	env, ok := parseEnvelope(norm)
	return ok && len(env.recipients) > 0 && len(env.ciphertext) > 0 && entropy.LooksRandom(env.ciphertext)
}
