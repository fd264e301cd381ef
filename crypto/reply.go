package crypto

import (
	"fmt"
	"strings"
)

// Reply is an SMTP reply: a value, never a string parsed again later (as
// go-smtp's SMTPError).
type Reply struct {
	Code     int    // 451, 550, …
	Enhanced string // RFC 3463 status code, "4.3.0"
	Text     string
}

// String is the reply as sent: "451 4.3.0 text".
func (r Reply) String() string {
	if r.IsZero() {
		return ""
	}
	return fmt.Sprintf("%d %s %s", r.Code, r.Enhanced, r.Text)
}

// IsZero reports whether r is no reply.
func (r Reply) IsZero() bool { return r.Code == 0 }

// Check reports whether r is a well-formed reply of class (4 or 5): a
// three-digit code of that class, an enhanced code of the same class and a
// text without line breaks.
func (r Reply) Check(class int) error {
	if r.Code/100 != class || r.Code < 100 || r.Code > 599 {
		return fmt.Errorf("crypto: reply %q: code is not %dXX", r, class)
	}
	parts := strings.Split(r.Enhanced, ".")
	if len(parts) != 3 || parts[0] != fmt.Sprint(class) {
		return fmt.Errorf("crypto: reply %q: enhanced code is not %d.X.X", r, class)
	}
	if r.Text == "" || strings.ContainsAny(r.Text, "\r\n\x00") {
		return fmt.Errorf("crypto: reply %q: text is empty or has line breaks", r)
	}
	return nil
}

// The replies the engine and the milter send.
var (
	// TempfailReply answers every internal error.
	TempfailReply = Reply{451, "4.3.0", "Temporary local problem, try again later"}
	// InternalRejectReply answers an internal error when [actions]
	// on_internal_error = "reject".
	InternalRejectReply = Reply{554, "5.3.0", "Local problem; message not accepted"}
	// ShuttingDownReply answers a message starting while the daemon drains.
	ShuttingDownReply = Reply{451, "4.3.2", "Service shutting down, try again later"}
	// TooBigReply refuses a message over limits.max_message_size.
	TooBigReply = Reply{552, "5.3.4", "Message too big for cryptmilter (limits.max_message_size)"}
	// HeaderTooBigReply refuses a header over limits.max_header_size.
	HeaderTooBigReply = Reply{552, "5.3.4", "Message header too large (limits.max_header_size)"}
	// LimitReply refuses a message whose MIME structure is too deep or
	// has too many parts.
	LimitReply = Reply{552, "5.3.4", "Message structure exceeds the MIME depth or part limit"}
	// MalformedReply refuses an outbound message whose MIME structure
	// cannot be read (so it cannot be signed or encrypted as it is).
	MalformedReply = Reply{554, "5.6.0", "Message has a malformed MIME structure and cannot be signed or encrypted"}
	// DeferReply makes an SMTP client send a recipient of another class
	// in a new transaction.
	DeferReply = Reply{452, "4.5.3", "Too many recipients for one encryption class; send the rest in another transaction"}
	// DecryptRejectReply and DecryptTempfailReply answer a failed
	// decryption when [actions] on_decrypt_error says so.
	DecryptRejectReply   = Reply{550, "5.7.5", "Message could not be decrypted"}
	DecryptTempfailReply = Reply{451, "4.7.5", "Message could not be decrypted, try again later"}
)

// NoKeyReply refuses a message with a required recipient without a key.
func NoKeyReply(addr string, tempfail bool) Reply {
	if tempfail {
		return Reply{451, "4.7.1", fmt.Sprintf("<%s>: no usable encryption key, try again later", addr)}
	}
	return Reply{550, "5.7.1", fmt.Sprintf("<%s>: no usable encryption key", addr)}
}

// TempfailOf turns a permanent refusal into the temporary one with the
// same meaning (class 4, same subject and detail), for actions that say
// tempfail.
func TempfailOf(r Reply) Reply {
	if r.Code/100 == 4 {
		return r
	}
	t := r
	t.Code = 451
	if _, rest, ok := strings.Cut(r.Enhanced, "."); ok {
		t.Enhanced = "4." + rest
	}
	t.Text = r.Text + ", try again later"
	return t
}
