package discover

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"strings"

	"golang.org/x/net/idna"
)

// zbase32Alphabet is z-base-32 (Zooko's human-oriented base-32), which
// the Web Key Directory uses for the hash of the local part.
const zbase32Alphabet = "ybndrfg8ejkmcpqxot1uwisza345h769"

// zbase32 encodes b, most significant bit first, without padding.
func zbase32(b []byte) string {
	var out strings.Builder
	var acc uint32
	bits := 0
	for _, c := range b {
		acc = acc<<8 | uint32(c)
		bits += 8
		for bits >= 5 {
			out.WriteByte(zbase32Alphabet[(acc>>(bits-5))&31])
			bits -= 5
		}
	}
	if bits > 0 {
		out.WriteByte(zbase32Alphabet[(acc<<(5-bits))&31])
	}
	return out.String()
}

// asciiLower lower-cases ASCII letters only, as the Web Key Directory
// maps the local part before hashing.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// WKDHash is the Web Key Directory name of a local part: the z-base-32
// encoded SHA-1 hash of the local part with ASCII letters lower-cased
// (draft-koch-openpgp-webkey-service, section 3.1).
func WKDHash(local string) string {
	h := sha1.Sum([]byte(asciiLower(local)))
	return zbase32(h[:])
}

// WKDURLs returns the advanced and the direct method URLs of the key for
// local@domain (domain in A-label form, lower case), and the policy file
// of each method.
func WKDURLs(local, domain string) (advanced, advancedPolicy, direct, directPolicy string) {
	q := "?l=" + url.QueryEscape(local)
	h := WKDHash(local)
	adv := "https://openpgpkey." + domain + "/.well-known/openpgpkey/" + domain
	dir := "https://" + domain + "/.well-known/openpgpkey"
	return adv + "/hu/" + h + q, adv + "/policy", dir + "/hu/" + h + q, dir + "/policy"
}

// DANEName is the owner name of a DANE record for an e-mail address: the
// SHA2-256 hash of the local part (as is, UTF-8), truncated to 28 octets,
// in hexadecimal, then label ("_openpgpkey" for OPENPGPKEY, RFC 7929
// section 3; "_smimecert" for SMIMEA, RFC 8162 section 3), then the
// domain.
func DANEName(local, label, domain string) string {
	h := sha256.Sum256([]byte(local))
	return hex.EncodeToString(h[:28]) + "." + label + "." + domain + "."
}

// Labels of the DANE records.
const (
	labelOpenPGPKey = "_openpgpkey"
	labelSMIMECert  = "_smimecert"
)

// hostName reports whether a (A-labels) is a host name DNS can ask for:
// no empty label (".0", "a..b"), labels of at most 63 and names of at most
// 253 characters.
func hostName(a string) bool {
	if len(a) > 253 {
		return false
	}
	for _, l := range strings.Split(a, ".") {
		if l == "" || len(l) > 63 {
			return false
		}
	}
	return true
}

// splitAddress splits an addr-spec into its local part (as is) and its
// domain in A-label form, lower case, without a final dot.
func splitAddress(addr string) (local, domain string, err error) {
	addr = strings.TrimSpace(strings.Trim(strings.TrimSpace(addr), "<>"))
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || at == len(addr)-1 {
		return "", "", fmt.Errorf("discover: %q is not an e-mail address", addr)
	}
	local, domain = addr[:at], strings.TrimSuffix(addr[at+1:], ".")
	a, err := idna.Lookup.ToASCII(domain)
	if err != nil || a == "" || strings.ContainsAny(a, "/?#[]@:\\ ") || !hostName(a) {
		return "", "", fmt.Errorf("discover: %q: the domain is not a host name", addr)
	}
	return local, strings.ToLower(a), nil
}
