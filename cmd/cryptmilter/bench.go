package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	dj "github.com/d--j/go-milter"

	"github.com/cryptmilter/cryptmilter/internal/config"
	"github.com/cryptmilter/cryptmilter/internal/milterclient"
)

const benchUsage = `Usage: cryptmilter bench --connect SOCKET --direction in|out --from ADDR --rcpt ADDR [--rcpt ADDR]...
                         --size BYTES --messages N --concurrency C [--daemon NAME] [--json]
                         [-c FILE [--protocol openpgp|smime] [--signer-key FILE]]

Drives a running milter as an MTA would (milter protocol, one session per
worker) and reports throughput and latency from MAIL to the end-of-message
reply.

  --connect SOCKET     the milter's socket, Postfix syntax (inet:127.0.0.1:8895, unix:/path)
  --direction in|out   in: a client at 192.0.2.1; out: a client at 127.0.0.1 with
                       {daemon_name} = --daemon (default ORIGINATING)
  --from, --rcpt       envelope sender and recipients
  --size BYTES         body size of each message (text lines; for inbound
                       ciphertext, the size of the text before encryption)
  --messages N         messages in all
  --concurrency C      parallel milter sessions
  --json               print the result as JSON

Inbound with real ciphertext (what decrypt+verify costs):
  -c FILE              the milter's configuration: messages are encrypted to the
                       gateway key (or certificate) of the first --rcpt in its keystore
  --protocol P         openpgp (PGP/MIME, default) or smime (signed, then enveloped)
  --signer-key FILE    the correspondent (--from) who signs: an unlocked armored
                       OpenPGP secret key, or a PEM file with an S/MIME private key
                       and certificate. Without it a throwaway correspondent is
                       generated; the gateway does not know it, so every signature
                       reads "untrusted" (the verification work is the same; import
                       the correspondent's public key and pass --signer-key to see
                       "valid"). Every message must come back decrypted, else it
                       counts as an error.
Without -c inbound messages are plain text. A progress line is shown on
standard error when it is a terminal.

Examples:
  cryptmilter bench --connect inet:127.0.0.1:8895 --direction in --from a@example.net \
      --rcpt rt@example.org --size 10000 --messages 1000 --concurrency 4
  cryptmilter bench -c /etc/cryptmilter/cryptmilter.toml --connect inet:127.0.0.1:8895 --direction in \
      --protocol smime --from a@example.net --rcpt rt@example.org --size 10000 --messages 1000 --concurrency 32
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

	// verdicts counts the result headers of inbound ciphertext
	// ("encryption decrypted", "signature untrusted"); text output only,
	// so that the JSON keeps its shape.
	verdicts map[string]int
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
	cfgFile := fs.String("c", "", "configuration file (inbound ciphertext)")
	protocol := fs.String("protocol", "openpgp", "openpgp or smime")
	signerKey := fs.String("signer-key", "", "correspondent's secret key")
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
	case *protocol != "openpgp" && *protocol != "smime":
		errorf(stderr, "bench: --protocol %q: want openpgp or smime", *protocol)
		return 1
	case *cfgFile != "" && *dir != "in", *signerKey != "" && *cfgFile == "":
		errorf(stderr, "bench: -c and --signer-key are for --direction in with real ciphertext (-c gives the keystore)")
		return 1
	}
	msgs := []benchMsg{plainBenchMsg(*size)}
	encrypted := *cfgFile != ""
	if encrypted {
		if msgs, err = buildEncrypted(*cfgFile, *protocol, *signerKey, *from, rcpts[0], *size, *messages, stderr); err != nil {
			errorf(stderr, "bench: %v", err)
			return 1
		}
	}
	var progress io.Writer
	if isTerminal(stderr) {
		progress = stderr
	}
	res := bench(sock, *dir, *daemon, *from, rcpts, msgs, encrypted, *size, *messages, *concurrency, progress)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(res)
	} else {
		what := res.Direction
		if encrypted {
			what += ", " + *protocol + " ciphertext"
		}
		fmt.Fprintf(stdout, "%d messages of %d bytes, %s, concurrency %d: %.1f messages/s, %.1f MB/s\n",
			res.Messages, res.Size, what, res.Concurrency, res.PerSecond, res.BytesPerSec/1e6)
		fmt.Fprintf(stdout, "latency ms: p50 %.2f  p90 %.2f  p99 %.2f  max %.2f\n", res.LatencyP50Ms, res.LatencyP90Ms, res.LatencyP99Ms, res.LatencyMaxMs)
		fmt.Fprintf(stdout, "actions: %s; errors %d\n", countList(res.Actions), res.Errors)
		if len(res.verdicts) > 0 {
			fmt.Fprintf(stdout, "verdicts: %s\n", countList(res.verdicts))
		}
	}
	if res.Errors > 0 {
		errorf(stderr, "bench: %d of %d messages failed; first: %s", res.Errors, res.Messages, res.FirstError)
		return 1
	}
	return 0
}

func countList(m map[string]int) string {
	var l []string
	for a, n := range m {
		l = append(l, fmt.Sprintf("%s %d", a, n))
	}
	slices.Sort(l)
	return strings.Join(l, ", ")
}

// buildEncrypted makes the distinct ciphertexts the workers send in turn
// (at most 32: the server decrypts each one anew every time).
func buildEncrypted(cfgFile, protocol, signerKey, from, rcpt string, size, messages int, stderr io.Writer) ([]benchMsg, error) {
	gw, err := loadBenchGateway(cfgFile, protocol, rcpt)
	if err != nil {
		return nil, err
	}
	signer, err := loadBenchSigner(signerKey, protocol, from)
	if err != nil {
		return nil, err
	}
	if signer.throwaway {
		hintf(stderr, "bench: signing as a throwaway correspondent %s that the gateway does not know: signatures read \"untrusted\" (pass --signer-key with a key in the keystore for \"valid\")", from)
	}
	msgs := make([]benchMsg, min(messages, 32))
	for i := range msgs {
		if msgs[i], err = encryptedBenchMsg(i, size, protocol, signer, gw); err != nil {
			return nil, fmt.Errorf("build message: %w", err)
		}
	}
	return msgs, nil
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
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

func bench(sock config.Socket, dir, daemon, from string, rcpts []string, msgs []benchMsg, encrypted bool, size, messages, concurrency int, progress io.Writer) *benchResult {
	res := &benchResult{Messages: messages, Actions: map[string]int{}, Size: size, Concurrency: concurrency, Direction: dir, verdicts: map[string]int{}}
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
	stop := showProgress(progress, messages, start, func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(lat) + res.Errors
	})
	var wg sync.WaitGroup
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var s *benchConn
			for i := range work {
				if s == nil {
					var err error
					if s, err = benchSession(sock, dir, daemon); err != nil {
						fail(err)
						continue
					}
				}
				t0 := time.Now()
				act, mods, err := benchMessage(s, i, from, rcpts, msgs[i%len(msgs)])
				if err != nil {
					fail(err)
					s.Close()
					s = nil
					continue
				}
				d := time.Since(t0)
				var verdicts []string
				if encrypted {
					if verdicts, err = inboundVerdicts(i, mods); err != nil {
						fail(err)
						continue
					}
				}
				mu.Lock()
				lat = append(lat, d)
				res.Actions[act]++
				res.Modifications += len(mods)
				for _, v := range verdicts {
					res.verdicts[v]++
				}
				mu.Unlock()
			}
			if s != nil {
				s.Close()
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	stop()
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

// showProgress prints "done/total, rate" on w twice a second until the
// returned function is called (which ends the line). A nil w shows
// nothing.
func showProgress(w io.Writer, total int, start time.Time, done func() int) (stop func()) {
	if w == nil {
		return func() {}
	}
	quit := make(chan struct{})
	finished := make(chan struct{})
	line := func() {
		n := done()
		fmt.Fprintf(w, "\r%d/%d messages, %.0f messages/s ", n, total, float64(n)/time.Since(start).Seconds())
	}
	go func() {
		defer close(finished)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-quit:
				line()
				fmt.Fprintln(w)
				return
			case <-t.C:
				line()
			}
		}
	}()
	return func() {
		close(quit)
		<-finished
	}
}

// inboundVerdicts checks that the milter decrypted message i (its
// X-Cryptmilter-Encryption says "decrypted") and returns the verdict
// tokens of the result headers it set.
func inboundVerdicts(i int, mods []dj.ModifyAction) ([]string, error) {
	var enc, sig string
	for _, m := range mods {
		switch {
		case m.Type != dj.ActionAddHeader && m.Type != dj.ActionInsertHeader && m.Type != dj.ActionChangeHeader:
		case strings.EqualFold(m.HeaderName, "X-Cryptmilter-Encryption"):
			enc = strings.TrimSpace(m.HeaderValue)
		case strings.EqualFold(m.HeaderName, "X-Cryptmilter-Signature"):
			sig = strings.TrimSpace(m.HeaderValue)
		}
	}
	token := func(v string) string {
		t, _, _ := strings.Cut(v, ";")
		return strings.TrimSpace(t)
	}
	if token(enc) != "decrypted" {
		return nil, fmt.Errorf("message %d was not decrypted: X-Cryptmilter-Encryption: %q (is --rcpt a gateway address of this milter's keystore?)", i, enc)
	}
	out := []string{"encryption decrypted"}
	if sig != "" {
		out = append(out, "signature "+token(sig))
	}
	return out, nil
}

// benchConn is a milter session and the macros it sends.
type benchConn struct {
	*dj.ClientSession
	macros *dj.MacroBag
}

// benchSession opens a milter session as an MTA offering protocol version
// 6 would (the milter chooses the no-reply options it wants), and sends the
// connection data.
func benchSession(sock config.Socket, dir, daemon string) (*benchConn, error) {
	s, bag, err := milterclient.Open(sock.Network, sock.Address, dir, daemon, "bench.invalid", 5*time.Minute)
	if err != nil {
		return nil, err
	}
	return &benchConn{s, bag}, nil
}

// benchMessage sends one message and returns the final action and the
// modifications asked for.
func benchMessage(s *benchConn, i int, from string, rcpts []string, msg benchMsg) (string, []dj.ModifyAction, error) {
	s.macros.Set("i", fmt.Sprintf("BENCH%06d", i))
	hdr := [][2]string{
		{"From", from}, {"To", strings.Join(rcpts, ", ")}, {"Subject", fmt.Sprintf("bench %d", i)},
		{"Message-ID", fmt.Sprintf("<bench-%d-%d@bench.invalid>", i, time.Now().UnixNano())},
		{"MIME-Version", "1.0"},
	}
	return milterclient.Transaction(s.ClientSession, from, rcpts, append(hdr, msg.fields...), msg.body)
}
