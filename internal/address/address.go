// Package address implements the one canonical form of e-mail addresses
// that rules, key lookups and Bcc classification compare: what two
// spellings of the same mailbox have in common.
package address

import (
	"strings"

	"golang.org/x/net/idna"
)

// Canonical returns addr (an addr-spec, or one in angle brackets) in its
// canonical form: the local part unquoted when the quotes are not needed
// ("alice"@x is alice@x; a quoted-pair is resolved), the domain in lower
// case without a final dot and in its ASCII (A-label) form (IDN in
// U-labels and A-labels compare equal), an address literal ([192.0.2.1])
// kept as it is. The local part keeps its case; fold lowers it too (the
// local part is case-sensitive by RFC 5321, but in practice never so).
// It returns "" for something that is not an address.
func Canonical(addr string, fold bool) string {
	local, domain, ok := Split(addr)
	if !ok {
		return ""
	}
	if fold {
		local = strings.ToLower(local)
	}
	return local + "@" + domain
}

// Split returns the canonical local part and domain of addr.
func Split(addr string) (local, domain string, ok bool) {
	a := strings.TrimSpace(addr)
	a = strings.TrimSuffix(strings.TrimPrefix(a, "<"), ">")
	at := strings.LastIndexByte(a, '@')
	if at <= 0 || at == len(a)-1 {
		return "", "", false
	}
	local, domain = unquote(a[:at]), a[at+1:]
	if local == "" {
		return "", "", false
	}
	return local, canonicalDomain(domain), true
}

// canonicalDomain lowers the domain, drops a final dot and converts IDN
// U-labels to A-labels; an address literal stays as it is (lowered).
func canonicalDomain(d string) string {
	d = strings.ToLower(strings.TrimSuffix(d, "."))
	if strings.HasPrefix(d, "[") {
		return d
	}
	if ascii, err := idna.Lookup.ToASCII(d); err == nil && ascii != "" {
		return ascii
	}
	return d
}

// unquote removes the quotes of a quoted local part whose content needs
// none (a dot-atom), resolving quoted pairs; other quoted local parts are
// kept quoted, with quoted pairs reduced to what needs one.
func unquote(l string) string {
	if len(l) < 2 || l[0] != '"' || l[len(l)-1] != '"' {
		return l
	}
	var b strings.Builder
	in := l[1 : len(l)-1]
	for i := 0; i < len(in); i++ {
		if in[i] == '\\' && i+1 < len(in) {
			i++
		}
		b.WriteByte(in[i])
	}
	s := b.String()
	if isDotAtom(s) {
		return s
	}
	var q strings.Builder
	q.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			q.WriteByte('\\')
		}
		q.WriteByte(s[i])
	}
	q.WriteByte('"')
	return q.String()
}

// isDotAtom reports whether s is an RFC 5322 dot-atom.
func isDotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r >= 0x80:
		case strings.ContainsRune("!#$%&'*+-/=?^_`{|}~.", r):
		default:
			return false
		}
	}
	return true
}
