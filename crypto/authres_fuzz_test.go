package crypto

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/authres"

	"github.com/cryptmilter/cryptmilter/crypto/mime"
	"github.com/cryptmilter/cryptmilter/crypto/verdict"
	"github.com/cryptmilter/cryptmilter/internal/spool"
)

// FuzzAuthResults runs the inbound engine on a plain message carrying
// arbitrary Authentication-Results fields (one per line of the input)
// and checks what leaves: every field go-msgauth's parser (a reader the
// next hop may use) reads as the gateway's authserv-id with an smime
// result is removed; every field that does not claim the gateway's id at
// all (verdict.ClaimsAuthservID) stays, as do other verifiers' results
// under it when they can be read; and no smime result under the gateway's
// id survives but the one the engine writes.
func FuzzAuthResults(f *testing.F) {
	for _, s := range []string{
		inHost + "; smime=pass body.smime-identifier=boss@example.org",
		inHost + ";\r\n\tdkim=pass (1024-bit key) header.d=example.net\n" + inHost + "; smime=pass",
		"other.example; smime=pass\n(c) " + inHost + "; smime=fail",
		"\"" + inHost + "\" 1; smime=pass\n" + inHost + "(;) ; dkim=pass",
		"=?utf-8?q?" + inHost + "?=; smime=pass\n" + strings.ToUpper(inHost) + ".; SMIME=pass",
		inHost + "; dmarc=pass header.from=example.net (smime=pass)",
	} {
		f.Add(s)
	}
	e := New(testPolicy(func(p *Policy) { p.Hostname = inHost }), mustSpool(f))
	f.Fuzz(func(t *testing.T, values string) {
		var h mime.Header
		for _, v := range strings.Split(values, "\n") {
			v = strings.TrimRight(v, "\r")
			if strings.ContainsAny(v, "\x00") || len(h) >= 32 {
				continue
			}
			// A field value as the MTA hands it over: folded lines only.
			v = strings.ReplaceAll(v, "\r", " ")
			h = append(h, mime.FromMilter("Authentication-Results", v))
		}
		if len(h) == 0 {
			return
		}
		in := len(h)
		h = append(h, mime.Field{Name: "From", Value: "a@example.net"}, mime.Field{Name: "Subject", Value: "s"})
		plan, err := e.Process(context.Background(), &Input{
			Direction: Inbound,
			Envelope:  Envelope{From: "a@example.net", Rcpts: []string{"rt@example.org"}},
			Message:   Message{Header: h, Body: spool.FromBytes([]byte("hello\r\n"))},
			Now:       time.Now(),
		})
		if err != nil {
			t.Fatalf("Process: %v", err)
		}
		defer plan.Close()
		if plan.Action != Accept {
			t.Fatalf("a plain message: %s %q", plan.Action, plan.Reply)
		}
		deleted := map[int]bool{} // index among the AR fields (1-based)
		for _, op := range plan.HeaderOps {
			if op.Kind == OpDelete && strings.EqualFold(op.Name, "Authentication-Results") {
				deleted[op.Index] = true
			}
		}
		for i, fl := range h[:in] {
			v := fl.Value
			if ours, smimeResult := parsedAsOurs(v); ours && smimeResult && !deleted[i+1] {
				t.Errorf("go-msgauth reads %q as an smime result of %s, and it stays", v, inHost)
			}
			if !verdict.ClaimsAuthservID(v, inHost) && deleted[i+1] {
				t.Errorf("%q does not claim %s, and it is removed", v, inHost)
			}
		}
		out := plan.ApplyHeader(h)
		added := 0
		for _, fl := range out {
			if strings.EqualFold(fl.Name, "Authentication-Results") && forgedAuthResults(fl.Value, inHost) {
				added++
			}
		}
		if added > 1 {
			t.Errorf("%d smime results under %s leave: %q", added, inHost, out.Values("Authentication-Results"))
		}
	})
}

// parsedAsOurs reads v with go-msgauth: whether the authserv-id is ours,
// and whether a result is for the smime method.
func parsedAsOurs(v string) (ours, smimeResult bool) {
	id, results, err := authres.Parse(mime.Unfold(v))
	if err != nil && id == "" {
		return false, false
	}
	if !strings.EqualFold(strings.TrimSuffix(strings.Trim(id, `"`), "."), inHost) {
		return false, false
	}
	for _, r := range results {
		if g, ok := r.(*authres.GenericResult); ok && strings.EqualFold(g.Method, "smime") {
			return true, true
		}
	}
	return true, false
}

func mustSpool(f *testing.F) *spool.Dir {
	sp, err := spool.Open(f.TempDir(), 64<<10)
	if err != nil {
		f.Fatal(err)
	}
	return sp
}
