// Command memdriver is the helper of test/bench/rss.sh: it sends one
// message file through a running milter, several copies at once, as an MTA
// would, and says what the milter did with each.
//
//	memdriver send --connect inet:HOST:PORT --direction in|out --from ADDR --rcpt ADDR [--rcpt ADDR]...
//	               [--concurrency N] FILE
//
// send prints one line: the number of copies, their actions, the
// X-Cryptmilter-Encryption verdicts and the size of the replaced bodies. It
// exits 1 when a session fails or the copies are not all treated alike.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	dj "github.com/d--j/go-milter"

	"github.com/cryptmilter/cryptmilter/internal/milterclient"
)

func main() {
	if len(os.Args) < 2 {
		fail("usage: memdriver send ...")
	}
	var err error
	switch os.Args[1] {
	case "send":
		err = send(os.Args[2:])
	default:
		err = fmt.Errorf("unknown subcommand %q", os.Args[1])
	}
	if err != nil {
		fail(err.Error())
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "memdriver: error:", msg)
	os.Exit(1)
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// message is a message file split as the MTA hands it over.
type message struct {
	fields [][2]string
	body   []byte // CRLF line ends
}

func send(args []string) error {
	fs := flag.NewFlagSet("send", flag.ContinueOnError)
	connect := fs.String("connect", "", "milter socket (inet:HOST:PORT)")
	dir := fs.String("direction", "in", "in or out")
	from := fs.String("from", "", "envelope sender")
	conc := fs.Int("concurrency", 1, "copies sent at once")
	var rcpts multiFlag
	fs.Var(&rcpts, "rcpt", "envelope recipient")
	if err := fs.Parse(args); err != nil {
		return err
	}
	addr, ok := strings.CutPrefix(*connect, "inet:")
	if !ok || fs.NArg() != 1 || *from == "" || len(rcpts) == 0 || *conc < 1 {
		return fmt.Errorf("send --connect inet:HOST:PORT --direction in|out --from ADDR --rcpt ADDR [--concurrency N] FILE")
	}
	msg, err := readMessage(fs.Arg(0))
	if err != nil {
		return err
	}
	type outcome struct {
		action, enc string
		replaced    bool
		body        int
		err         error
	}
	out := make([]outcome, *conc)
	var wg sync.WaitGroup
	for i := range out {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := &out[i]
			var mods []dj.ModifyAction
			o.action, mods, o.err = sendOne(addr, *dir, *from, rcpts, msg, i)
			for _, m := range mods {
				switch {
				case m.Type == dj.ActionReplaceBody:
					o.replaced = true
					o.body += len(m.Body)
				case strings.EqualFold(m.HeaderName, "X-Cryptmilter-Encryption") && m.HeaderValue != "":
					o.enc, _, _ = strings.Cut(strings.TrimSpace(m.HeaderValue), ";")
				}
			}
		}()
	}
	wg.Wait()
	counts := map[string]int{}
	for _, o := range out {
		if o.err != nil {
			return fmt.Errorf("copy failed: %w", o.err)
		}
		body := "unchanged"
		if o.replaced {
			body = fmt.Sprintf("%d bytes", o.body)
		}
		counts[fmt.Sprintf("%s, encryption %s, body %s", o.action, orNone(o.enc), body)]++
	}
	var lines []string
	for k, n := range counts {
		lines = append(lines, fmt.Sprintf("%d× %s", n, k))
	}
	slices.Sort(lines)
	fmt.Println(strings.Join(lines, "; "))
	if len(counts) != 1 {
		return fmt.Errorf("the copies were not all treated alike")
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "(no header)"
	}
	return s
}

// readMessage reads a message file: header fields (folded lines joined
// with "\n", as milters receive them) and the body with CRLF line ends.
func readMessage(name string) (*message, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<20)
	m := &message{}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return nil, fmt.Errorf("%s: header: %w", name, err)
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			if len(m.fields) == 0 {
				return nil, fmt.Errorf("%s: continuation line first", name)
			}
			m.fields[len(m.fields)-1][1] += "\n" + line
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("%s: %q is not a header field", name, line)
		}
		m.fields = append(m.fields, [2]string{k, strings.TrimPrefix(v, " ")})
	}
	body, err := io.ReadAll(br)
	if err != nil {
		return nil, err
	}
	body = bytes.ReplaceAll(body, []byte("\r\n"), []byte("\n"))
	m.body = bytes.ReplaceAll(body, []byte("\n"), []byte("\r\n"))
	return m, nil
}

// sendOne sends msg in a session of its own, as an MTA offering protocol
// version 6 would, and returns the action and the modifications the
// milter asked for.
func sendOne(addr, dir, from string, rcpts []string, msg *message, i int) (string, []dj.ModifyAction, error) {
	s, bag, err := milterclient.Open("tcp", addr, dir, "ORIGINATING", "memdriver.invalid", 10*time.Minute)
	if err != nil {
		return "", nil, err
	}
	defer s.Close()
	bag.Set("i", fmt.Sprintf("MEM%06d", i))
	return milterclient.Transaction(s, from, rcpts, msg.fields, msg.body)
}
