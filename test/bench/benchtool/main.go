// Command benchtool is the helper of test/bench/sidebyside.sh: it picks a
// free port, writes the peers' messages, turns a `cryptmilter bench
// --json` result into a line of results.tsv and prints the summary table
// with the ratios.
//
//	benchtool port
//	benchtool messages DIR SIZE N
//	benchtool row DIRECTION PROTOCOL CONCURRENCY MESSAGES CPU_TICKS_BEFORE CPU_TICKS_AFTER < bench.json
//	benchtool summary results.tsv
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat
// (100 on every Linux architecture Go supports).
const clockTicks = 100

func main() {
	if len(os.Args) < 2 {
		fail("usage: benchtool port | messages DIR SIZE N | row ... | summary FILE")
	}
	var err error
	switch os.Args[1] {
	case "port":
		err = port()
	case "messages":
		err = messages(os.Args[2:])
	case "row":
		err = row(os.Args[2:])
	case "summary":
		err = summary(os.Args[2:])
	default:
		err = fmt.Errorf("unknown subcommand %q", os.Args[1])
	}
	if err != nil {
		fail(err.Error())
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "benchtool: error:", msg)
	os.Exit(1)
}

func port() error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer l.Close()
	fmt.Println(l.Addr().(*net.TCPAddr).Port)
	return nil
}

// messages writes N messages of SIZE body bytes (the text cryptmilter
// bench sends) into DIR as NNNN.eml.
func messages(args []string) error {
	if len(args) != 3 {
		return fmt.Errorf("messages DIR SIZE N")
	}
	size, err1 := strconv.Atoi(args[1])
	n, err2 := strconv.Atoi(args[2])
	if err1 != nil || err2 != nil {
		return fmt.Errorf("messages: SIZE and N must be numbers")
	}
	line := "The quick brown fox jumps over the lazy dog; Grüße, 0123456789.\r\n"
	body := strings.Repeat(line, size/len(line)+1)[:size]
	for i := range n {
		head := fmt.Sprintf("From: rt@example.org\r\nTo: bob@example.net\r\nSubject: bench %d\r\nMIME-Version: 1.0\r\n"+
			"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n", i)
		if err := os.WriteFile(filepath.Join(args[0], fmt.Sprintf("%04d.eml", i)), []byte(head+body), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// benchResult is the part of `cryptmilter bench --json` used here.
type benchResult struct {
	Messages   int     `json:"messages"`
	Errors     int     `json:"errors"`
	Seconds    float64 `json:"seconds"`
	PerSecond  float64 `json:"messages_per_second"`
	P99        float64 `json:"latency_p99_ms"`
	FirstError string  `json:"first_error"`
}

func row(args []string) error {
	if len(args) != 6 {
		return fmt.Errorf("row DIRECTION PROTOCOL CONCURRENCY MESSAGES CPU_BEFORE CPU_AFTER < bench.json")
	}
	var r benchResult
	if err := json.NewDecoder(os.Stdin).Decode(&r); err != nil {
		return fmt.Errorf("row: bench output: %w", err)
	}
	if r.Errors > 0 {
		return fmt.Errorf("row: bench had %d errors; first: %s", r.Errors, r.FirstError)
	}
	c0, _ := strconv.ParseFloat(args[4], 64)
	c1, _ := strconv.ParseFloat(args[5], 64)
	cpu := (c1 - c0) / clockTicks * 1e6 / float64(r.Messages)
	fmt.Printf("cryptmilter\t%s\t%s\t%s\t%d\t%.3f\t%.1f\t%.0f\t%.2f\n", args[0], args[1], args[2], r.Messages, r.Seconds, r.PerSecond, cpu, r.P99)
	return nil
}

type result struct {
	tool, dir, proto string
	conc, n          int
	rate, cpu, p99   float64
}

func readTSV(path string) ([]result, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []result
	sc := bufio.NewScanner(f)
	for line := 0; sc.Scan(); line++ {
		c := strings.Split(sc.Text(), "\t")
		if line == 0 || len(c) < 8 {
			continue
		}
		r := result{tool: c[0], dir: c[1], proto: c[2]}
		r.conc, _ = strconv.Atoi(c[3])
		r.n, _ = strconv.Atoi(c[4])
		r.rate, _ = strconv.ParseFloat(c[6], 64)
		r.cpu, _ = strconv.ParseFloat(c[7], 64)
		if len(c) > 8 {
			r.p99, _ = strconv.ParseFloat(c[8], 64)
		}
		out = append(out, r)
	}
	return out, sc.Err()
}

// summary prints, per direction and protocol, cryptmilter's server CPU per
// message (the lowest over the concurrencies run, as the peers' is per
// process anyway) and its best throughput, the peer's, and the ratios.
func summary(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("summary results.tsv")
	}
	rs, err := readTSV(args[0])
	if err != nil {
		return err
	}
	fmt.Println("| direction | protocol | cryptmilter CPU µs/msg | peer CPU µs/msg | CPU ratio | cryptmilter msg/s (concurrency) | peer msg/s (workers) | throughput ratio |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	for _, k := range [][2]string{{"out", "openpgp"}, {"in", "openpgp"}, {"out", "smime"}, {"in", "smime"}} {
		var cm []result
		var peer *result
		for i, r := range rs {
			if r.dir != k[0] || r.proto != k[1] {
				continue
			}
			if r.tool == "cryptmilter" {
				cm = append(cm, r)
			} else {
				peer = &rs[i]
			}
		}
		if len(cm) == 0 || peer == nil {
			continue
		}
		best := slices.MaxFunc(cm, func(a, b result) int { return cmpFloat(a.rate, b.rate) })
		low := slices.MinFunc(cm, func(a, b result) int { return cmpFloat(a.cpu, b.cpu) })
		fmt.Printf("| %s | %s | %.0f | %.0f (%s) | %.1f× less | %.0f (c=%d) | %.0f (%d) | %.1f× |\n",
			k[0], k[1], low.cpu, peer.cpu, peer.tool, peer.cpu/low.cpu, best.rate, best.conc, peer.rate, peer.conc, best.rate/peer.rate)
	}
	fmt.Println()
	fmt.Println("| direction | protocol | concurrency | msg/s | server CPU µs/msg | p99 ms |")
	fmt.Println("|---|---|---|---|---|---|")
	for _, r := range rs {
		if r.tool == "cryptmilter" {
			fmt.Printf("| %s | %s | %d | %.0f | %.0f | %.1f |\n", r.dir, r.proto, r.conc, r.rate, r.cpu, r.p99)
		}
	}
	return nil
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
