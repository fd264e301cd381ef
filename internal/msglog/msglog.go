// Package msglog implements the one log line per message: what was decided
// and done, for whom, why the direction was chosen, and the queue ids of
// the copies re-injected, with only the fields that apply.
package msglog

import (
	"context"
	"log/slog"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/cryptmilter/cryptmilter/crypto"
)

// MaxRecipients is how many recipients the line names at level info (all
// of them at debug); it always gives their number.
const MaxRecipients = 5

// Message is what became of one message, as the milter knows it at the end.
type Message struct {
	QueueID   string
	Direction crypto.Direction
	// DirectionBy says why Direction was chosen, e.g.
	// "daemon_name=ORIGINATING", "sasl", "internal_hosts=192.0.2.7",
	// "default inbound".
	DirectionBy string
	From        string
	Rcpts       []string
	Size        int64
	Elapsed     time.Duration
	// Plan is the engine's plan; nil when the message ended before the
	// engine or by a failure.
	Plan *crypto.Plan
	// Reply, when not zero, is the reply sent instead of the plan's: the
	// message failed (Why and Err say how) or was refused before the
	// engine.
	Reply crypto.Reply
	Level slog.Level
	Why   string
	Err   error
	// Reinjected are the queue ids the re-injection listener gave the
	// extra copies (QueueID of its DATA reply), one per copy handed over,
	// "" where its reply named none.
	Reinjected []string
	// Skipped is the number of copies not handed over because an earlier
	// attempt of the same message handed them over (the hand-over
	// journal).
	Skipped int
	// Macros are the MTA's macros, logged at debug level only.
	Macros map[string]string
}

// Outcome returns the decision and the action of the line, as the metrics
// count them: the plan's, or "failed" and the reply's class when the
// message failed.
func (m *Message) Outcome() (decision, action string) {
	decision = "failed"
	if m.Plan != nil {
		decision, action = m.Plan.Decision, m.Plan.Action.String()
	}
	if !m.Reply.IsZero() {
		action = "tempfail"
		if m.Reply.Code/100 == 5 {
			action = "reject"
		}
	}
	return decision, action
}

// Log writes the message's line at m.Level.
func Log(ctx context.Context, log *slog.Logger, m *Message) {
	log.LogAttrs(ctx, m.Level, "message", m.Attrs(log.Enabled(ctx, slog.LevelDebug))...)
}

// planCopies is the plan's count of deliveries, replaced on the line by
// the re-injected copies and their queue ids.
const planCopies = "copies"

// Attrs returns the line's attributes; debug names every recipient and
// adds the macros.
func (m *Message) Attrs(debug bool) []slog.Attr {
	decision, action := m.Outcome()
	var attrs []slog.Attr
	seen := map[string]bool{}
	add := func(a slog.Attr) {
		if !seen[a.Key] {
			seen[a.Key] = true
			attrs = append(attrs, a)
		}
	}
	if m.QueueID != "" {
		add(slog.String("queue_id", m.QueueID))
	}
	add(slog.String("direction", m.Direction.String()))
	if m.DirectionBy != "" {
		add(slog.String("direction_by", m.DirectionBy))
	}
	add(slog.String("decision", decision))
	if action != "" {
		add(slog.String("action", action))
	}
	add(slog.String("from", m.From))
	add(slog.Int("rcpts", len(m.Rcpts)))
	if len(m.Rcpts) > 0 {
		add(slog.String("recipients", recipients(m.Rcpts, debug)))
	}
	add(slog.Int64("size", m.Size))
	add(slog.Int64("ms", m.Elapsed.Milliseconds()))
	carried := m.Plan != nil && m.Reply.IsZero()
	if carried {
		for _, a := range m.Plan.Attrs {
			if a.Key != planCopies {
				add(a)
			}
		}
	}
	if len(m.Reinjected) > 0 {
		add(slog.Int("reinjected", len(m.Reinjected)))
		if ids := queueIDs(m.Reinjected); ids != "" {
			add(slog.String("reinjected_ids", ids))
		}
	}
	if m.Skipped > 0 {
		add(slog.Int("copies_handed_over_before", m.Skipped))
	}
	if carried && !m.Plan.Reply.IsZero() {
		add(slog.String("reply", m.Plan.Reply.String()))
	}
	if m.Why != "" {
		add(slog.String("reason", m.Why))
	}
	if m.Err != nil {
		add(slog.String("error", m.Err.Error()))
	}
	if !m.Reply.IsZero() {
		add(slog.String("reply", m.Reply.String()))
	}
	if debug && len(m.Macros) > 0 {
		keys := make([]string, 0, len(m.Macros))
		for k := range m.Macros {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		macros := make([]slog.Attr, 0, len(keys))
		for _, k := range keys {
			macros = append(macros, slog.String(k, m.Macros[k]))
		}
		add(slog.Attr{Key: "macros", Value: slog.GroupValue(macros...)})
	}
	return attrs
}

// recipients joins the recipients, the first MaxRecipients unless debug.
func recipients(rcpts []string, debug bool) string {
	clean := make([]string, 0, len(rcpts))
	for _, r := range rcpts {
		r = strings.Trim(r, "<>")
		if strings.ContainsAny(r, ",\" \t") || !utf8.ValidString(r) || strings.IndexFunc(r, oddRune) >= 0 {
			// A quoted local part may hold a comma: quoted, so that the
			// list splits only between recipients.
			r = strconv.QuoteToASCII(r)
		}
		clean = append(clean, r)
	}
	if debug || len(clean) <= MaxRecipients {
		return strings.Join(clean, ",")
	}
	return strings.Join(clean[:MaxRecipients], ",") + ",+" + strconv.Itoa(len(clean)-MaxRecipients) + " more"
}

// oddRune reports a rune that would make a logged address ambiguous or
// reorder the line on screen: controls, format characters (bidi marks
// and overrides, zero-width characters), anything not graphic.
func oddRune(r rune) bool {
	return unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || !strconv.IsGraphic(r)
}

// queueIDs joins the known queue ids ("?" for a copy without one), or ""
// when none is known.
func queueIDs(ids []string) string {
	known := false
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = id
		if id == "" {
			out[i] = "?"
		} else {
			known = true
		}
	}
	if !known {
		return ""
	}
	return strings.Join(out, ",")
}

var queueIDForms = []*regexp.Regexp{
	// Postfix: "2.0.0 Ok: queued as 4XyZ1a2b3c"
	regexp.MustCompile(`\bqueued as ([0-9A-Za-z]+)`),
	// Sendmail: "2.0.0 5B1NdQxq012345 Message accepted for delivery"
	regexp.MustCompile(`^(?:[245]\.\d{1,3}\.\d{1,3} )?([0-9A-Za-z]+) Message accepted for delivery`),
	// Exim: "OK id=1tXyZa-000ABC-12"
	regexp.MustCompile(`\bid=([0-9A-Za-z-]+)`),
}

// QueueID returns the queue id an MTA names in its reply to the end of
// DATA (go-smtp's DataResponse.StatusText, e.g. Postfix's "2.0.0 Ok:
// queued as 4XyZ"), or "" when the reply names none.
func QueueID(statusText string) string {
	for _, re := range queueIDForms {
		if m := re.FindStringSubmatch(statusText); m != nil {
			return m[1]
		}
	}
	return ""
}
