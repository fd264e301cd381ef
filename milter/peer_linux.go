package milter

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// peerUID returns the user owning the other end of a TCP connection when
// that end is a socket of this host, from /proc/self/net/tcp and tcp6 (the
// kernel lists every socket of the network namespace with its owner's uid;
// a local client's socket is the entry whose local address is the
// connection's remote one and the other way round; /proc/self/net, since
// systemd's ProcSubset=pid hides /proc/net). local is false when the
// connection comes from another host (it is not checked). A local peer
// that cannot be found alive is an error: the check fails closed. Written
// by hand: no library answers "which local user opened this TCP
// connection", and SO_PEERCRED exists for unix sockets only.
func peerUID(nc net.Conn) (uid uint32, local bool, err error) {
	ra, ok1 := nc.RemoteAddr().(*net.TCPAddr)
	la, ok2 := nc.LocalAddr().(*net.TCPAddr)
	if !ok1 || !ok2 {
		return 0, false, nil
	}
	client, server := plainAddrPort(ra.AddrPort()), plainAddrPort(la.AddrPort())
	if !isLocalAddr(client.Addr()) {
		return 0, false, nil
	}
	// A table is read in pieces; an entry may be passed over while
	// sockets come and go: look again before giving up.
	for attempt := 0; attempt < 3; attempt++ {
		uid, found, err := findPeer(client, server)
		if err != nil || found {
			return uid, true, err
		}
	}
	return 0, true, fmt.Errorf("no live socket %s → %s in /proc/self/net/tcp{,6}", client, server)
}

// errPeerGone is a local peer whose socket was closed before it was
// looked up: the kernel shows such sockets as root's, so its user is
// unknown.
var errPeerGone = errors.New("the connecting socket was closed before its user could be found")

func findPeer(client, server netip.AddrPort) (uint32, bool, error) {
	for _, table := range []string{"/proc/self/net/tcp", "/proc/self/net/tcp6"} {
		uid, found, err := findSocket(table, client, server)
		switch {
		case errors.Is(err, os.ErrNotExist) && strings.HasSuffix(table, "6"):
			// No IPv6 on this host: no socket can be there.
		case err != nil || found:
			return uid, found, err
		}
	}
	return 0, false, nil
}

// plainAddrPort is ap without an IPv4-mapped form or a zone, as the
// kernel's tables write it.
func plainAddrPort(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port())
}

// localAddrs caches this host's addresses for a minute.
var localAddrs struct {
	mu    sync.Mutex
	at    time.Time
	addrs map[netip.Addr]bool
}

// isLocalAddr reports whether a is loopback or one of this host's
// addresses (a client may connect to a wildcard listener through any).
func isLocalAddr(a netip.Addr) bool {
	if a.IsLoopback() || a.IsUnspecified() {
		return true
	}
	localAddrs.mu.Lock()
	defer localAddrs.mu.Unlock()
	if time.Since(localAddrs.at) > time.Minute {
		m := map[netip.Addr]bool{}
		if as, err := net.InterfaceAddrs(); err == nil {
			for _, ia := range as {
				if n, ok := ia.(*net.IPNet); ok {
					if ip, ok := netip.AddrFromSlice(n.IP); ok {
						m[ip.Unmap()] = true
					}
				}
			}
		}
		localAddrs.addrs, localAddrs.at = m, time.Now()
	}
	return localAddrs.addrs[a]
}

// findSocket looks in one /proc/net table for the socket at local with
// remote as its peer. A matching entry without an inode (a socket closed
// already, in TIME_WAIT or an orphaned FIN_WAIT) is errPeerGone.
func findSocket(table string, local, remote netip.AddrPort) (uint32, bool, error) {
	f, err := os.Open(table)
	if err != nil {
		return 0, false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // the heading
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 {
			continue
		}
		l, ok1 := parseProcAddr(fields[1])
		r, ok2 := parseProcAddr(fields[2])
		if !ok1 || !ok2 || l != local || r != remote {
			continue
		}
		if fields[9] == "0" || fields[3] == "06" {
			return 0, true, errPeerGone
		}
		uid, err := strconv.ParseUint(fields[7], 10, 32)
		if err != nil {
			return 0, false, err
		}
		return uint32(uid), true, nil
	}
	return 0, false, sc.Err()
}

// parseProcAddr parses an address of /proc/net/tcp ("0100007F:1F90": the
// address as 32-bit words in the host's byte order, and the port) or of
// tcp6 (four such words).
func parseProcAddr(s string) (netip.AddrPort, bool) {
	a, p, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, false
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, false
	}
	raw, err := hex.DecodeString(a)
	if err != nil || len(raw) != 4 && len(raw) != 16 {
		return netip.AddrPort{}, false
	}
	b := make([]byte, len(raw))
	for i := 0; i < len(raw); i += 4 {
		binary.BigEndian.PutUint32(b[i:], binary.NativeEndian.Uint32(raw[i:]))
	}
	addr, _ := netip.AddrFromSlice(b)
	return netip.AddrPortFrom(addr.Unmap(), uint16(port)), true
}
