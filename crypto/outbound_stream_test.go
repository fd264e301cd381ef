package crypto

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"github.com/cryptmilter/cryptmilter/crypto/mime"
)

// TestBase64LinesMatchesWriteBase64: streaming base64 through base64Lines
// (in odd-sized writes) gives exactly mime.WriteBase64's layout.
func TestBase64LinesMatchesWriteBase64(t *testing.T) {
	for _, n := range []int{1, 2, 3, 56, 57, 58, 113, 114, 115, 1000, 57 * 100, 100003} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			data := make([]byte, n)
			rand.Read(data)
			var want bytes.Buffer
			if err := mime.WriteBase64(&want, data); err != nil {
				t.Fatal(err)
			}
			var got bytes.Buffer
			lw := &base64Lines{w: &got}
			enc := base64.NewEncoder(base64.StdEncoding, lw)
			for rest := data; len(rest) > 0; {
				k := min(7, len(rest)) // odd-sized writes
				if _, err := enc.Write(rest[:k]); err != nil {
					t.Fatal(err)
				}
				rest = rest[k:]
			}
			if err := enc.Close(); err != nil {
				t.Fatal(err)
			}
			if err := lw.Close(); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Bytes(), want.Bytes()) {
				t.Fatalf("base64Lines differs from WriteBase64:\n got %q\nwant %q", tail(got.Bytes()), tail(want.Bytes()))
			}
		})
	}
}

func tail(b []byte) []byte {
	if len(b) > 200 {
		return b[len(b)-200:]
	}
	return b
}

// outLargeMessage is outTestMessage with a further random attachment of
// n bytes (base64), so that every spool buffer spills to disk.
func outLargeMessage(to, cc string, n int) []byte {
	msg := string(outTestMessage(to, cc))
	data := make([]byte, n)
	rand.Read(data)
	var att bytes.Buffer
	att.WriteString("--mixed\r\nContent-Type: application/octet-stream; name=\"big.bin\"\r\n" +
		"Content-Disposition: attachment; filename=\"big.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	mime.WriteBase64(&att, data)
	i := strings.LastIndex(msg, "--mixed--")
	return []byte(msg[:i] + att.String() + msg[i:])
}

// TestOutboundSMIMELargeStreamed: a message larger than the spool's
// memory threshold goes through the streaming S/MIME path (spooled
// signed entity, SignDetachedReader, EncryptTo into base64): each
// recipient's copy (the second reusing the cached signed entity)
// decrypts with openssl, its signature verifies, and the decoded content
// equals what was sent; the signed-only copy verifies too.
func TestOutboundSMIMELargeStreamed(t *testing.T) {
	f := outFixtureFor(t)
	msg := outLargeMessage("dave@example.com", "erin@example.com", 3<<20)
	e, snap := f.engine(t, nil)
	_, copies := processOut(t, e, snap, outGatewayAddr, []string{"dave@example.com", "erin@example.com"}, msg)
	if len(copies) != 2 {
		t.Fatalf("%d copies, want 2", len(copies))
	}
	for _, addr := range []string{"dave@example.com", "erin@example.com"} {
		raw := outCopyFor(t, copies, addr)
		outCheckOuter(t, raw, msg, true)
		outCheckInner(t, f.smimeDecrypt(t, addr, raw), msg, "cipher")
	}

	e, snap = f.engine(t, func(c *Policy) {
		c.Outbound.Rules = []Rule{{Match: "*", Policy: SignOnly}}
	})
	_, copies = processOut(t, e, snap, outGatewayAddr, []string{"dave@example.com"}, msg)
	raw := outCopyFor(t, copies, "dave@example.com")
	outCheckOuter(t, raw, msg, false)
	outCheckInner(t, f.smimeVerify(t, raw), msg, "clear")
}
