package keystore

// A helper process that uses the keystore as the daemon does, without
// root's power to read everything: the tests run as root, so the helper is
// this test binary re-executed as nobody (or as the same user when the
// tests do not run as root). The parent changes permissions between the
// helper's commands, so that the permission errors are real.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const helperEnv = "CRYPTMILTER_KEYSTORE_HELPER"

// helperReport is what the helper answers to each command.
type helperReport struct {
	Err         string            `json:"err,omitempty"`
	Faults      []helperFault     `json:"faults"`
	Problems    []string          `json:"problems"`
	Lookups     map[string]string `json:"lookups"` // "addr kind" → ok, nokey, unavailable or error: …
	Unavailable []string          `json:"unavailable"`
	HealthOK    bool              `json:"health_ok"`
	Health      []string          `json:"health"`
}

type helperFault struct {
	Path string `json:"path"`
	Kept bool   `json:"kept"`
	Err  string `json:"err"`
}

// helperMain reads commands from standard input and answers each with one
// line of JSON: load (a fresh Load), holder (NewHolder), reload
// (Holder.Reload), sighup (Holder.SetOptions, what SIGHUP does), watch
// (start Holder.Watch), await-fault PATH and await-clean (wait for the
// watcher), initialized (IsInitialized), init ADDR (Init).
func helperMain() int {
	opts := Options{Dir: os.Getenv(helperEnv)}
	probes := strings.Fields(os.Getenv(helperEnv + "_PROBE"))
	var h *Holder
	ctx, cancel := context.WithCancel(context.Background())
	var watchDone sync.WaitGroup
	defer watchDone.Wait() // after cancel: deferred calls run last first
	defer cancel()
	enc := json.NewEncoder(os.Stdout)
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		var s *Snapshot
		var err error
		switch f[0] {
		case "load":
			s, err = Load(opts)
		case "holder":
			if h, err = NewHolder(opts); err == nil {
				s = h.Current()
			}
		case "reload":
			err = h.Reload()
			s = h.Current()
		case "sighup":
			err = h.SetOptions(opts)
			s = h.Current()
		case "watch":
			watchDone.Add(1)
			go func() { defer watchDone.Done(); h.Watch(ctx) }()
			time.Sleep(200 * time.Millisecond) // let it add its watches
			s = h.Current()
		case "await-fault", "await-clean":
			deadline := time.Now().Add(10 * time.Second)
			for {
				s = h.Current()
				found := len(s.Faults()) == 0
				if f[0] == "await-fault" {
					found = false
					for _, fl := range s.Faults() {
						found = found || fl.Path == f[1]
					}
				}
				if found || time.Now().After(deadline) {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
		case "initialized":
			var ok bool
			ok, err = IsInitialized(opts)
			if err == nil && !ok {
				err = errors.New("not initialized")
			}
		case "init":
			_, err = Init(opts, f[1:], false, time.Now())
		default:
			err = fmt.Errorf("unknown command %q", f[0])
		}
		r := helperReport{Lookups: map[string]string{}}
		if err != nil {
			r.Err = err.Error()
		}
		if s != nil {
			r.fill(s, h, probes)
		}
		enc.Encode(r)
	}
	return 0
}

func (r *helperReport) fill(s *Snapshot, h *Holder, probes []string) {
	now := time.Now()
	for _, f := range s.Faults() {
		r.Faults = append(r.Faults, helperFault{Path: f.Path, Kept: f.Kept, Err: f.Err.Error()})
	}
	for _, p := range s.Problems() {
		r.Problems = append(r.Problems, p.File)
	}
	for a := Area(0); a < numAreas; a++ {
		if s.Unavailable(a) != nil {
			r.Unavailable = append(r.Unavailable, a.String())
		}
	}
	verdict := func(err error) string {
		switch {
		case err == nil:
			return "ok"
		case errors.Is(err, ErrUnavailable) && errors.Is(err, ErrNoKey):
			return "error: both ErrUnavailable and ErrNoKey: " + err.Error()
		case errors.Is(err, ErrUnavailable):
			return "unavailable"
		case errors.Is(err, ErrNoKey):
			return "nokey"
		}
		return "error: " + err.Error()
	}
	for _, a := range probes {
		_, err := s.EncryptionKey(a, now)
		r.Lookups[a+" openpgp"] = verdict(err)
		_, err = s.Certificate(a, now)
		r.Lookups[a+" cert"] = verdict(err)
		_, err = s.GatewayOpenPGPAt(a, now)
		r.Lookups[a+" gw-openpgp"] = verdict(err)
		_, err = s.GatewaySMIMEAt(a, now)
		r.Lookups[a+" gw-smime"] = verdict(err)
	}
	if h != nil {
		r.HealthOK, r.Health = h.Health(now)
	}
}

// unpriv is the copy of the test binary that nobody may execute.
var unpriv struct {
	once sync.Once
	dir  string
	exe  string
	err  error
}

// unprivUser returns the uid and gid the helper runs as: nobody when the
// tests run as root, else the current user (who is already unprivileged).
func unprivUser(t *testing.T) (uid, gid int) {
	t.Helper()
	if os.Geteuid() != 0 {
		return os.Geteuid(), os.Getegid()
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("running as root, and no user nobody to drop privileges to: %v", err)
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return uid, gid
}

// unprivDir makes a directory the helper's user owns, under a parent it
// may traverse; removed at the end of the test.
func unprivDir(t *testing.T) string {
	t.Helper()
	uid, gid := unprivUser(t)
	parent, err := os.MkdirTemp("", "ks-unpriv-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(parent) })
	os.Chmod(parent, 0o755)
	dir := filepath.Join(parent, "keystore")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	return dir
}

// chownTree gives every file under dir to the helper's user.
func chownTree(t *testing.T, dir string) {
	t.Helper()
	uid, gid := unprivUser(t)
	filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err == nil {
			err = os.Lchown(p, uid, gid)
		}
		if err != nil {
			t.Fatal(err)
		}
		return nil
	})
}

type helperProc struct {
	t   *testing.T
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

// startHelper starts the helper on the keystore dir, probing the lookups
// of each address in probes.
func startHelper(t *testing.T, dir string, probes ...string) *helperProc {
	t.Helper()
	unpriv.once.Do(func() {
		exe, err := os.Executable()
		if err != nil {
			unpriv.err = err
			return
		}
		if unpriv.dir, unpriv.err = os.MkdirTemp("", "ks-helper-"); unpriv.err != nil {
			return
		}
		os.Chmod(unpriv.dir, 0o755)
		unpriv.exe = filepath.Join(unpriv.dir, "keystore.test")
		b, err := os.ReadFile(exe)
		if err == nil {
			err = os.WriteFile(unpriv.exe, b, 0o755)
		}
		unpriv.err = err
	})
	if unpriv.err != nil {
		t.Fatalf("copying the test binary for the helper: %v", unpriv.err)
	}
	uid, gid := unprivUser(t)
	cmd := exec.Command(unpriv.exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+dir, helperEnv+"_PROBE="+strings.Join(probes, " "), "HOME=/")
	cmd.Dir = "/"
	if os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	}
	cmd.Stderr = &testWriter{t: t}
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the helper as uid %d: %v", uid, err)
	}
	h := &helperProc{t: t, cmd: cmd, in: in, out: bufio.NewScanner(out)}
	h.out.Buffer(nil, 1<<20)
	t.Cleanup(func() {
		in.Close()
		cmd.Wait()
	})
	return h
}

// do sends one command and returns the helper's report.
func (h *helperProc) do(command string) helperReport {
	h.t.Helper()
	fmt.Fprintln(h.in, command)
	if !h.out.Scan() {
		h.t.Fatalf("helper died at %q: %v", command, h.out.Err())
	}
	var r helperReport
	if err := json.Unmarshal(h.out.Bytes(), &r); err != nil {
		h.t.Fatalf("helper answered %q: %v", h.out.Text(), err)
	}
	return r
}

// testWriter sends the helper's standard error (its log) to the test log.
type testWriter struct{ t *testing.T }

func (w *testWriter) Write(p []byte) (int, error) {
	w.t.Logf("helper: %s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
