package crypto

import (
	"strings"

	"github.com/cryptmilter/cryptmilter/crypto/mime"
)

// ownMethods are the Authentication-Results methods cryptmilter reports
// (RFC 7281's smime).
var ownMethods = []string{"smime"}

// forgedAuthResults reports whether an incoming Authentication-Results
// value is one cryptmilter must remove: under our authserv-id and with a
// result for one of our methods. Results for other methods under the same
// authserv-id belong to the other verifiers on this host: OpenDKIM, listed
// before cryptmilter so that it verifies DKIM before decryption, has
// inserted its dkim result by the time cryptmilter sees the header, and
// Postfix does not tell a field added by an earlier milter from one that
// came with the message. Each verifier removes forged results of its own
// methods (OpenDKIM does so for dkim by default), as RFC 8601 section 5
// asks of whoever adds results under an authserv-id.
func forgedAuthResults(value, ours string) bool {
	if authservID(value) != strings.ToLower(ours) {
		return false
	}
	_, rest, _ := strings.Cut(stripComments(mime.Unfold(value)), ";")
	// resinfo: method[/version] = result ... ; a quoted ";" only splits
	// more pieces, which can only remove more.
	for _, res := range strings.Split(rest, ";") {
		method, _, _ := strings.Cut(strings.TrimSpace(res), "=")
		method, _, _ = strings.Cut(strings.TrimSpace(method), "/")
		for _, m := range ownMethods {
			if strings.EqualFold(strings.TrimSpace(method), m) {
				return true
			}
		}
	}
	return false
}
