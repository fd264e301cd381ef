package smime

import (
	"bytes"
	"io"

	"github.com/cryptmilter/cryptmilter/internal/entropy"
)

// IsEnvelope reports whether der is exactly one complete CMS EnvelopedData
// or AuthEnvelopedData (RFC 5652, RFC 5083) with at least one recipient
// and encrypted content that looks like ciphertext. Outbound mail that is
// "already encrypted" must pass this before it is sent as it is: data that
// merely begins with the right OID is not enough.
func IsEnvelope(der []byte) bool {
	s, err := readEnvelopeHead(bytes.NewReader(der))
	if err != nil || s.content == nil || len(s.env.recipients) == 0 {
		return false
	}
	var sample bytes.Buffer
	n, err := io.Copy(&sample, io.LimitReader(s.content, 64<<10))
	if err != nil {
		return false
	}
	rest, err := io.Copy(io.Discard, s.content)
	return err == nil && s.finish() == nil && n+rest > 0 && entropy.LooksRandom(sample.Bytes())
}
