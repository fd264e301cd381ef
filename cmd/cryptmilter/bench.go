package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/cryptmilter/cryptmilter/internal/config"
)

const benchUsage = `Usage: cryptmilter bench --connect SOCKET --direction in|out --from ADDR --rcpt ADDR [--rcpt ADDR]...
                         --size BYTES --messages N --concurrency C [--daemon NAME] [--json]

Drives a running milter as an MTA would (milter protocol, one session per
worker) and reports throughput and latency from MAIL to the end-of-message
reply.

  --connect SOCKET     the milter's socket, Postfix syntax (inet:127.0.0.1:8895, unix:/path)
  --direction in|out   in: a client at 192.0.2.1; out: a client at 127.0.0.1 with
                       {daemon_name} = --daemon (default ORIGINATING)
  --from, --rcpt       envelope sender and recipients
  --size BYTES         body size of each message (text lines)
  --messages N         messages in all
  --concurrency C      parallel milter sessions
  --json               print the result as JSON

Examples:
  cryptmilter bench --connect inet:127.0.0.1:8895 --direction in --from a@example.net \
      --rcpt rt@example.org --size 10000 --messages 1000 --concurrency 4
  cryptmilter bench --connect unix:/run/cryptmilter/milter.sock --direction out --from rt@example.org \
      --rcpt a@example.net --rcpt b@example.com --size 50000 --messages 200 --concurrency 2 --json
`

// benchResult is what bench reports.
type benchResult struct {
	Messages      int            `json:"messages"`
	Errors        int            `json:"errors"`
	Actions       map[string]int `json:"actions"`
	Seconds       float64        `json:"seconds"`
	PerSecond     float64        `json:"messages_per_second"`
	BytesPerSec   float64        `json:"bytes_per_second"`
	LatencyP50Ms  float64        `json:"latency_p50_ms"`
	LatencyP90Ms  float64        `json:"latency_p90_ms"`
	LatencyP99Ms  float64        `json:"latency_p99_ms"`
	LatencyMaxMs  float64        `json:"latency_max_ms"`
	FirstError    string         `json:"first_error,omitempty"`
	Size          int            `json:"size"`
	Concurrency   int            `json:"concurrency"`
	Direction     string         `json:"direction"`
	Modifications int            `json:"modifications"`
}

func runBench(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("bench", benchUsage, stderr)
	connect := fs.String("connect", "", "milter socket")
	dir := fs.String("direction", "", "in or out")
	from := fs.String("from", "", "envelope sender")
	size := fs.Int("size", 10000, "body size")
	messages := fs.Int("messages", 100, "messages")
	concurrency := fs.Int("concurrency", 1, "parallel sessions")
	daemon := fs.String("daemon", "ORIGINATING", "{daemon_name} for outbound")
	asJSON := fs.Bool("json", false, "JSON output")
	var rcpts multiFlag
	fs.Var(&rcpts, "rcpt", "envelope recipient")
	if code, ok := parseFlags(fs, args, stdout, stderr, benchUsage); !ok {
		return code
	}
	sock, err := config.ParseSocket(*connect)
	switch {
	case *connect == "" || err != nil:
		errorf(stderr, "bench: --connect %q: want a socket such as inet:127.0.0.1:8895", *connect)
		return 1
	case *dir != "in" && *dir != "out":
		errorf(stderr, "bench: --direction %q: want in or out", *dir)
		return 1
	case *from == "" || len(rcpts) == 0:
		errorf(stderr, "bench: --from and at least one --rcpt are needed")
		return 1
	case *size < 0 || *messages <= 0 || *concurrency <= 0:
		errorf(stderr, "bench: --size must be >= 0, --messages and --concurrency > 0")
		return 1
	}
	res := bench(sock, *dir, *daemon, *from, rcpts, *size, *messages, *concurrency)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(res)
	} else {
		fmt.Fprintf(stdout, "%d messages of %d bytes, %s, concurrency %d: %.1f messages/s, %.1f MB/s\n",
			res.Messages, res.Size, res.Direction, res.Concurrency, res.PerSecond, res.BytesPerSec/1e6)
		fmt.Fprintf(stdout, "latency ms: p50 %.2f  p90 %.2f  p99 %.2f  max %.2f\n", res.LatencyP50Ms, res.LatencyP90Ms, res.LatencyP99Ms, res.LatencyMaxMs)
		var acts []string
		for a, n := range res.Actions {
			acts = append(acts, fmt.Sprintf("%s %d", a, n))
		}
		slices.Sort(acts)
		fmt.Fprintf(stdout, "actions: %s; errors %d\n", strings.Join(acts, ", "), res.Errors)
	}
	if res.Errors > 0 {
		errorf(stderr, "bench: %d of %d messages failed; first: %s", res.Errors, res.Messages, res.FirstError)
		return 1
	}
	return 0
}

// benchBody returns a text body of about size bytes.
func benchBody(size int) []byte {
	line := "The quick brown fox jumps over the lazy dog; Grüße, 0123456789.\r\n"
	var b strings.Builder
	for b.Len() < size {
		b.WriteString(line)
	}
	return []byte(b.String()[:size])
}

func bench(sock config.Socket, dir, daemon, from string, rcpts []string, size, messages, concurrency int) *benchResult {
	body := benchBody(size)
	res := &benchResult{Messages: messages, Actions: map[string]int{}, Size: size, Concurrency: concurrency, Direction: dir}
	var mu sync.Mutex
	var lat []time.Duration
	work := make(chan int, messages)
	for i := 0; i < messages; i++ {
		work <- i
	}
	close(work)
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		res.Errors++
		if res.FirstError == "" {
			res.FirstError = err.Error()
		}
	}
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var s *gomilter.ClientSession
			for i := range work {
				if s == nil {
					var err error
					if s, err = benchSession(sock, dir, daemon); err != nil {
						fail(err)
						continue
					}
				}
				t0 := time.Now()
				act, mods, err := benchMessage(s, i, from, rcpts, body)
				if err != nil {
					fail(err)
					s.Close()
					s = nil
					continue
				}
				d := time.Since(t0)
				mu.Lock()
				lat = append(lat, d)
				res.Actions[act]++
				res.Modifications += mods
				mu.Unlock()
			}
			if s != nil {
				s.Close()
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	res.Seconds = el.Seconds()
	ok := len(lat)
	res.PerSecond = float64(ok) / el.Seconds()
	res.BytesPerSec = float64(ok*size) / el.Seconds()
	slices.Sort(lat)
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		i := min(int(p*float64(len(lat))), len(lat)-1)
		return float64(lat[i].Microseconds()) / 1000
	}
	res.LatencyP50Ms, res.LatencyP90Ms, res.LatencyP99Ms = pct(0.5), pct(0.9), pct(0.99)
	if len(lat) > 0 {
		res.LatencyMaxMs = float64(lat[len(lat)-1].Microseconds()) / 1000
	}
	return res
}

// benchSession opens a milter session and sends the connection data.
func benchSession(sock config.Socket, dir, daemon string) (*gomilter.ClientSession, error) {
	c := gomilter.NewClientWithOptions(sock.Network, sock.Address, gomilter.ClientOptions{
		Dialer:       &net.Dialer{Timeout: 10 * time.Second},
		ReadTimeout:  5 * time.Minute,
		WriteTimeout: time.Minute,
		// The v2 actions: go-milter's client then negotiates with servers
		// that answer protocol version 2.
		ActionMask: gomilter.OptAddHeader | gomilter.OptChangeBody | gomilter.OptAddRcpt |
			gomilter.OptRemoveRcpt | gomilter.OptChangeHeader | gomilter.OptQuarantine,
	})
	s, err := c.Session()
	if err != nil {
		return nil, err
	}
	host, addr, name := "mx.example.net", "192.0.2.1", "smtpd"
	if dir == "out" {
		host, addr, name = "localhost", "127.0.0.1", daemon
	}
	s.Macros(gomilter.CodeConn, "{daemon_name}", name, "{client_addr}", addr, "j", "bench.invalid")
	if _, err := s.Conn(host, gomilter.FamilyInet, 25, addr); err != nil {
		s.Close()
		return nil, err
	}
	if _, err := s.Helo(host); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// benchMessage sends one message and returns the final action.
func benchMessage(s *gomilter.ClientSession, i int, from string, rcpts []string, body []byte) (string, int, error) {
	step := func(a *gomilter.Action, err error) error {
		if err != nil {
			return err
		}
		if a.Code != gomilter.ActContinue {
			return fmt.Errorf("milter answered %c %d %s before the end of the message", a.Code, a.SMTPCode, a.SMTPText)
		}
		return nil
	}
	s.Macros(gomilter.CodeMail, "i", fmt.Sprintf("BENCH%06d", i))
	if err := step(s.Mail(from, nil)); err != nil {
		return "", 0, err
	}
	for _, r := range rcpts {
		if err := step(s.Rcpt(r, nil)); err != nil {
			return "", 0, err
		}
	}
	hdr := [][2]string{
		{"From", from}, {"To", strings.Join(rcpts, ", ")}, {"Subject", fmt.Sprintf("bench %d", i)},
		{"Message-ID", fmt.Sprintf("<bench-%d-%d@bench.invalid>", i, time.Now().UnixNano())},
		{"MIME-Version", "1.0"}, {"Content-Type", "text/plain; charset=utf-8"}, {"Content-Transfer-Encoding", "8bit"},
	}
	for _, h := range hdr {
		if err := step(s.HeaderField(h[0], h[1])); err != nil {
			return "", 0, err
		}
	}
	if err := step(s.HeaderEnd()); err != nil {
		return "", 0, err
	}
	for b := body; len(b) > 0; {
		n := min(len(b), gomilter.MaxBodyChunk)
		if err := step(s.BodyChunk(b[:n])); err != nil {
			return "", 0, err
		}
		b = b[n:]
	}
	mods, act, err := s.End()
	if err != nil {
		return "", 0, err
	}
	switch act.Code {
	case gomilter.ActAccept, gomilter.ActContinue:
		return "accept", len(mods), nil
	case gomilter.ActDiscard:
		return "discard", len(mods), nil
	case gomilter.ActReject:
		return "reject", len(mods), nil
	case gomilter.ActTempFail:
		return "tempfail", len(mods), nil
	case gomilter.ActReplyCode:
		if act.SMTPCode >= 500 {
			return "reject", len(mods), nil
		}
		return "tempfail", len(mods), nil
	}
	return string(rune(act.Code)), len(mods), nil
}
