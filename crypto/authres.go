package crypto

import (
	"strings"

	"github.com/cryptmilter/cryptmilter/crypto/mime"
	"github.com/cryptmilter/cryptmilter/crypto/verdict"
)

// ownMethods are the Authentication-Results methods cryptmilter reports
// (RFC 7281's smime).
var ownMethods = []string{"smime"}

// forgedAuthResults reports whether an incoming Authentication-Results
// value is one cryptmilter must remove: one that a reader could take for
// ours (verdict.ClaimsAuthservID, in any form RFC 8601 or a lenient
// reader allows) and that carries a result for one of our methods, or
// cannot be read well enough to tell. Results for other methods under the
// same authserv-id belong to the other verifiers on this host: OpenDKIM,
// listed before cryptmilter so that it verifies DKIM before decryption,
// has inserted its dkim result by the time cryptmilter sees the header,
// and Postfix does not tell a field added by an earlier milter from one
// that came with the message. Each verifier removes forged results of its
// own methods (OpenDKIM does so for dkim by default), as RFC 8601 section
// 5 asks of whoever adds results under an authserv-id.
func forgedAuthResults(value, ours string) bool {
	if !verdict.ClaimsAuthservID(value, ours) {
		return false
	}
	if _, ok := verdict.AuthservID(value); !ok {
		return true // claims our id in some odd form: fail closed
	}
	v := strings.ToLower(mime.Unfold(value))
	_, rest, _ := strings.Cut(v, ";")
	// resinfo: method[/version] = result …; our methods' names anywhere
	// after the authserv-id (a comment, a quoted string) count too: that
	// can only remove more.
	for _, m := range ownMethods {
		if strings.Contains(rest, m) {
			return true
		}
	}
	return false
}
