package milter

import (
	"strings"

	"github.com/emersion/go-smtp"
)

// The ESMTP arguments of the original's MAIL and RCPT commands that
// re-injected copies keep (RFC 3461 DSN, RFC 6531 SMTPUTF8, RFC 8689
// REQUIRETLS). SIZE is the copy's own; BODY=8BITMIME is sent by the
// client whenever the listener offers it; AUTH= is not passed (the
// listener is the gateway's own). Arguments the listener does not offer
// are left out by the client, except SMTPUTF8 and REQUIRETLS, which then
// fail the hand-over: the message is tempfailed rather than delivered
// without them.

// esmtpParams splits "KEY=VALUE KEY …" into upper-case keys and values.
func esmtpParams(args string) map[string]string {
	out := map[string]string{}
	for _, f := range strings.Fields(args) {
		k, v, _ := strings.Cut(f, "=")
		out[strings.ToUpper(k)] = v
	}
	return out
}

// mailOptions returns the MAIL options of a copy of size bytes whose
// original had MAIL arguments args.
func mailOptions(args string, size int64) *smtp.MailOptions {
	p := esmtpParams(args)
	o := &smtp.MailOptions{Size: size}
	if _, ok := p["SMTPUTF8"]; ok {
		o.UTF8 = true
	}
	if _, ok := p["REQUIRETLS"]; ok {
		o.RequireTLS = true
	}
	switch r := strings.ToUpper(p["RET"]); r {
	case string(smtp.DSNReturnFull), string(smtp.DSNReturnHeaders):
		o.Return = smtp.DSNReturn(r)
	}
	if id, ok := decodeXtext(p["ENVID"]); ok && id != "" && printableASCII(id) {
		o.EnvelopeID = id
	}
	return o
}

// rcptOptions returns the RCPT options of a recipient whose RCPT had the
// arguments args, or nil.
func rcptOptions(args string) *smtp.RcptOptions {
	p := esmtpParams(args)
	o := &smtp.RcptOptions{}
	if n, ok := p["NOTIFY"]; ok {
		o.Notify = notifySet(n)
	}
	if v, ok := p["ORCPT"]; ok {
		typ, addr, _ := strings.Cut(v, ";")
		if a, ok := decodeXtext(addr); ok && a != "" {
			switch strings.ToUpper(typ) {
			case string(smtp.DSNAddressTypeRFC822):
				if printableASCII(a) {
					o.OriginalRecipientType, o.OriginalRecipient = smtp.DSNAddressTypeRFC822, a
				}
			case string(smtp.DSNAddressTypeUTF8):
				o.OriginalRecipientType, o.OriginalRecipient = smtp.DSNAddressTypeUTF8, a
			}
		}
	}
	if o.Notify == nil && o.OriginalRecipient == "" {
		return nil
	}
	return o
}

// notifySet parses a NOTIFY value: NEVER alone, or any of SUCCESS,
// FAILURE, DELAY. Anything else gives nil (the argument is dropped).
func notifySet(v string) []smtp.DSNNotify {
	var out []smtp.DSNNotify
	for _, w := range strings.Split(strings.ToUpper(v), ",") {
		switch n := smtp.DSNNotify(w); n {
		case smtp.DSNNotifyNever, smtp.DSNNotifySuccess, smtp.DSNNotifyFailure, smtp.DSNNotifyDelayed:
			for _, o := range out {
				if o == n {
					return nil
				}
			}
			out = append(out, n)
		default:
			return nil
		}
	}
	for _, n := range out {
		if n == smtp.DSNNotifyNever && len(out) > 1 {
			return nil
		}
	}
	return out
}

// decodeXtext decodes RFC 3461 xtext ("+XX" hex escapes).
func decodeXtext(s string) (string, bool) {
	if !strings.Contains(s, "+") {
		return s, true
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '+' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", false
		}
		hi, ok1 := unhex(s[i+1])
		lo, ok2 := unhex(s[i+2])
		if !ok1 || !ok2 {
			return "", false
		}
		b.WriteByte(hi<<4 | lo)
		i += 2
	}
	return b.String(), true
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}
