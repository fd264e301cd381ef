package milter

import (
	"net"
	"syscall"
)

// quickAcker acknowledges what was read from a TCP connection at once.
//
// With the no-reply protocol options, the MTA sends header fields and body
// chunks back to back and the milter answers nothing until the end of the
// message. Postfix leaves Nagle's algorithm on for its milter connections,
// so each of those small writes after the first waits for the milter's
// ACK of the one before, and Linux delays an ACK that no reply carries by
// up to 40 ms: through a real Postfix on loopback that was 42 ms between
// the final "." of DATA and the end of the body reaching the milter, for
// every message (test/e2e BenchmarkOracleTiming with
// CRYPTMILTER_TIMING_TAP=1). TCP_QUICKACK after each read sends the ACK at
// once; Linux leaves quick-ack mode by itself, hence once per read. Unix
// sockets have neither Nagle nor delayed ACKs.
type quickAcker struct{ rc syscall.RawConn }

// newQuickAcker returns the acker of nc, nil when nc is no TCP connection.
func newQuickAcker(nc net.Conn) *quickAcker {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return &quickAcker{rc}
}

// ack acknowledges the data read so far.
func (q *quickAcker) ack() {
	if q == nil {
		return
	}
	q.rc.Control(func(fd uintptr) {
		// Best effort: without it the ACK is only later.
		_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
	})
}
