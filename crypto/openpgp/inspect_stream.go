package openpgp

import (
	"io"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
)

// InspectArmored is Inspect for an armored PGP MESSAGE block read from r
// (leading text before its BEGIN line is skipped): it decodes the armor as
// it reads and stops at the first packet that tells what the message is,
// so that a large message is not read to its end.
func InspectArmored(r io.Reader) (Info, error) {
	info := Info{Armored: true}
	blk, err := armor.Decode(r)
	if err != nil || blk.Type != "PGP MESSAGE" {
		return info, ErrMalformed
	}
	return inspectPackets(blk.Body, info)
}
