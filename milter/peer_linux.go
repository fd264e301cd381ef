package milter

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// peerUID returns the user owning the other end of a TCP connection when
// that end is a socket of this host, from /proc/net/tcp and tcp6 (the
// kernel lists every socket with its owner's uid; a loopback client's
// socket is the entry whose local address is the connection's remote
// one and the other way round). found is false when the connection comes
// from another host, or is no TCP connection. Written by hand: no library
// answers "which local user opened this TCP connection", and SO_PEERCRED
// exists for unix sockets only.
func peerUID(nc net.Conn) (uid uint32, found bool, err error) {
	ra, ok1 := nc.RemoteAddr().(*net.TCPAddr)
	la, ok2 := nc.LocalAddr().(*net.TCPAddr)
	if !ok1 || !ok2 {
		return 0, false, nil
	}
	client, server := unmapped(ra.AddrPort()), unmapped(la.AddrPort())
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		uid, found, err := findSocket(table, client, server)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return 0, false, err
		}
		if found {
			return uid, true, nil
		}
	}
	return 0, false, nil
}

func unmapped(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// findSocket looks in one /proc/net table for the socket at local with
// remote as its peer.
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
		if len(fields) < 8 {
			continue
		}
		l, ok1 := parseProcAddr(fields[1])
		r, ok2 := parseProcAddr(fields[2])
		if !ok1 || !ok2 || l != local || r != remote {
			continue
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
// address as 32-bit words in the host's byte order, and the port)
// or of tcp6 (four such words).
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
