package discover

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/cryptmilter/cryptmilter/keystore"
)

// wkd looks addr up in its domain's Web Key Directory
// (draft-koch-openpgp-webkey-service-19, section 3.1):
//
//   - the advanced method first: if openpgpkey.DOMAIN has an address, and
//     it serves the policy file .well-known/openpgpkey/DOMAIN/policy, the
//     key is https://openpgpkey.DOMAIN/.well-known/openpgpkey/DOMAIN/hu/HASH?l=LOCAL
//     and its answer is final (a 404 there is "no key");
//   - otherwise (no such host, or a host without the policy file, such as
//     a wildcard web server) the direct method, on the same terms:
//     https://DOMAIN/.well-known/openpgpkey/hu/HASH?l=LOCAL after
//     .well-known/openpgpkey/policy.
//
// The draft requires every WKD to serve its policy file; it is what tells
// a real directory from a web server that happens to answer. A server that
// does not answer, or answers 5xx, is a temporary failure, never a reason
// to fall back ("a non-responding server does not mean that the fall back
// should be carried out"). Only keys with a user ID for addr are kept.
func (d *Discoverer) wkd(ctx context.Context, addr string, now time.Time) Answer {
	local, domain, err := splitAddress(addr)
	if err != nil {
		return Answer{Status: NotFound, Reason: err.Error()}
	}
	adv, advPolicy, direct, directPolicy := WKDURLs(local, domain)
	addrs, err := d.resolveHost(ctx, "openpgpkey."+domain)
	if err != nil {
		return Answer{Status: Temporary, From: adv, Reason: err.Error()}
	}
	if len(addrs) > 0 {
		a, final := d.wkdMethod(ctx, addr, advPolicy, adv, now)
		if final {
			return a
		}
	}
	addrs, err = d.resolveHost(ctx, domain)
	if err != nil {
		return Answer{Status: Temporary, From: direct, Reason: err.Error()}
	}
	if len(addrs) == 0 {
		return Answer{Status: NotFound, From: direct, Reason: "no Web Key Directory: neither openpgpkey." + domain + " nor " + domain + " has an address"}
	}
	a, _ := d.wkdMethod(ctx, addr, directPolicy, direct, now)
	return a
}

// wkdMethod fetches the policy file, then the key. final is false when
// there is no policy file (this is not a Web Key Directory).
func (d *Discoverer) wkdMethod(ctx context.Context, addr, policyURL, keyURL string, now time.Time) (a Answer, final bool) {
	_, status, err := d.get(ctx, policyURL, maxPolicyResponse)
	switch {
	case err != nil:
		return Answer{Status: Temporary, From: policyURL, Reason: err.Error()}, true
	case status >= 500:
		return Answer{Status: Temporary, From: policyURL, Reason: fmt.Sprintf("policy file: HTTP %d", status)}, true
	case status != http.StatusOK:
		return Answer{Status: NotFound, From: policyURL, Reason: fmt.Sprintf("no Web Key Directory: policy file: HTTP %d", status)}, false
	}
	body, status, err := d.get(ctx, keyURL, maxKeyResponse)
	switch {
	case errors.Is(err, errTooLarge):
		return Answer{Status: Unusable, From: keyURL, Reason: err.Error()}, true
	case err != nil:
		return Answer{Status: Temporary, From: keyURL, Reason: err.Error()}, true
	case status >= 500:
		return Answer{Status: Temporary, From: keyURL, Reason: fmt.Sprintf("HTTP %d", status)}, true
	case status != http.StatusOK:
		return Answer{Status: NotFound, From: keyURL, Reason: fmt.Sprintf("HTTP %d", status)}, true
	}
	k, err := keystore.CheckOpenPGP(body, addr, d.opts.FoldLocalPart, now)
	if err != nil {
		return Answer{Status: Unusable, From: keyURL, Reason: trimErr(err)}, true
	}
	return Answer{Status: Found, From: keyURL, OpenPGP: &Key{CheckedKey: *k}}, true
}

var errTooLarge = errors.New("response too large")

// get fetches url, reading at most limit bytes of the body.
func (d *Discoverer) get(ctx context.Context, url string, limit int64) ([]byte, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("User-Agent", "cryptmilter")
	resp, err := d.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, 0, fmt.Errorf("%s: no answer within discovery.timeout", url)
		}
		return nil, 0, describeHTTPError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		return nil, resp.StatusCode, nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", url, err)
	}
	if int64(len(body)) > limit {
		return nil, 0, fmt.Errorf("%w: %s is larger than %d bytes", errTooLarge, url, limit)
	}
	return body, resp.StatusCode, nil
}

// describeHTTPError shortens net/http's errors ("Get \"URL\": …").
func describeHTTPError(err error) error {
	s := err.Error()
	if i := strings.Index(s, "\": "); i > 0 && strings.HasPrefix(s, "Get \"") {
		return fmt.Errorf("%s: %s", s[5:i], s[i+3:])
	}
	return err
}
