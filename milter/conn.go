package milter

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// trackedConn is the connection the milter library reads and writes. It
//
//   - checks the framing of every packet before the library sees it: a
//     zero length, a length over the limit, or a connect, MAIL or RCPT
//     packet the library would slice past its end ends the connection
//     (d--j/go-milter indexes such packets without checking them, in a
//     goroutine of its own where a panic would stop the daemon);
//   - bounds every read by limits.idle_timeout;
//   - ends the session (EOF) at a packet boundary once the server drains
//     and no message is in flight;
//   - buffers reads, and writes a packet's 5-byte head together with its
//     data (the library writes them with two calls), and a message's
//     changes together with its final response;
//   - acknowledges each TCP read at once (quickack_linux.go);
//   - tells the server when it is closed.
type trackedConn struct {
	net.Conn
	c *conn
	r *bufio.Reader
	// left is what remains of the current packet (head included); 0 at
	// a packet boundary.
	left int
	// maxPacket is the largest packet accepted.
	maxPacket int
	idle      time.Duration
	// userDeadline is the read deadline the library set (zero: none).
	userDeadline time.Time
	// head is a packet head held back until its data is written.
	head [5]byte
	// pending are whole change packets not written yet (isModification).
	pending []byte
	held    bool
	once    sync.Once
	done    chan struct{}
	timer   bool // the last read error was the idle timeout
	ack     *quickAcker
}

// readBufSize is the read buffer of a connection. Connect, MAIL and RCPT
// packets must fit in it to be checked (an SMTP command line is far
// shorter).
const readBufSize = 8192

// ErrBadPacket is the read error for a packet the milter refuses to parse.
var ErrBadPacket = errors.New("milter: malformed packet from the MTA")

func newTrackedConn(nc net.Conn, c *conn, idle time.Duration, maxPacket int) *trackedConn {
	t := &trackedConn{Conn: nc, c: c, idle: idle, maxPacket: maxPacket, done: make(chan struct{}), ack: newQuickAcker(nc)}
	t.r = bufio.NewReaderSize(deadlineReader{t}, readBufSize)
	return t
}

// Read serves the library's reads packet by packet.
func (t *trackedConn) Read(p []byte) (int, error) {
	if t.left == 0 {
		if err := t.nextPacket(); err != nil {
			return 0, err
		}
	}
	if len(p) > t.left {
		p = p[:t.left]
	}
	n, err := t.r.Read(p)
	t.left -= n
	return n, err
}

// nextPacket waits for the head of the next packet and checks it.
func (t *trackedConn) nextPacket() error {
	if t.c.drainIdle() {
		return io.EOF
	}
	h, err := t.r.Peek(4)
	if err != nil {
		if len(h) == 0 && t.c.drainIdle() {
			return io.EOF
		}
		if errors.Is(err, io.EOF) && len(h) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	n := int(binary.BigEndian.Uint32(h))
	if n == 0 || n > t.maxPacket {
		return fmt.Errorf("%w: length %d (at most %d)", ErrBadPacket, n, t.maxPacket)
	}
	if h, err = t.r.Peek(5); err != nil {
		return noEOF(err)
	}
	switch h[4] {
	case 'C', 'M', 'R':
		if n+4 > readBufSize {
			return fmt.Errorf("%w: %c packet of %d bytes", ErrBadPacket, h[4], n)
		}
		b, err := t.r.Peek(4 + n)
		if err != nil {
			return noEOF(err)
		}
		if err := checkPacket(h[4], b[5:]); err != nil {
			return err
		}
	}
	t.left = 4 + n
	return nil
}

// noEOF turns EOF inside a packet into ErrUnexpectedEOF.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// checkPacket checks what the library takes for granted in a packet's
// data: connect is host NUL family [port address], MAIL and RCPT start
// with a NUL-terminated address.
func checkPacket(code byte, data []byte) error {
	i := indexNUL(data)
	if i < 0 {
		return fmt.Errorf("%w: %c packet without a NUL-terminated first string", ErrBadPacket, code)
	}
	if code == 'C' && len(data) <= i+1 {
		return fmt.Errorf("%w: connect packet without a protocol family", ErrBadPacket)
	}
	return nil
}

func indexNUL(b []byte) int {
	for i, c := range b {
		if c == 0 {
			return i
		}
	}
	return -1
}

// SetReadDeadline records the library's deadline; reads use the earlier
// of it and the idle timeout.
func (t *trackedConn) SetReadDeadline(d time.Time) error {
	t.userDeadline = d
	return nil
}

// SetDeadline sets both deadlines as SetReadDeadline and SetWriteDeadline do.
func (t *trackedConn) SetDeadline(d time.Time) error {
	t.userDeadline = d
	return t.Conn.SetWriteDeadline(d)
}

// Write writes a packet head together with the packet's data: the
// library writes the 5-byte head (length and code) first, then the data
// in a second call.
func (t *trackedConn) Write(p []byte) (int, error) {
	if t.held {
		t.held = false
		if isModification(t.head[4]) {
			// Gathered with the next reply: one write for all of a
			// message's changes and its final response.
			t.pending = append(append(t.pending, t.head[:]...), p...)
			if len(t.pending) < maxPending {
				return len(p), nil
			}
			// Mid-body: write, and keep the buffer for the next chunks.
			_, err := t.Conn.Write(t.pending)
			t.pending = t.pending[:0]
			return len(p), err
		}
		if len(t.pending) > 0 {
			t.pending = append(append(t.pending, t.head[:]...), p...)
			return len(p), t.flush()
		}
		bufs := net.Buffers{t.head[:], p}
		n, err := bufs.WriteTo(t.Conn)
		n -= int64(len(t.head))
		if n < 0 {
			n = 0
		}
		return int(n), err
	}
	if len(p) == 5 && binary.BigEndian.Uint32(p) > 1 {
		copy(t.head[:], p)
		t.held = true
		return 5, nil
	}
	if len(t.pending) > 0 {
		t.pending = append(t.pending, p...)
		return len(p), t.flush()
	}
	return t.Conn.Write(p)
}

// maxPending bounds the changes gathered before they are written (a body
// replacement comes in 64 KiB packets).
const maxPending = 256 << 10

// flush writes the gathered changes and the reply appended to them. A
// large buffer (a body replacement) is let go then, so that an idle
// connection holds none.
func (t *trackedConn) flush() error {
	_, err := t.Conn.Write(t.pending)
	t.pending = t.pending[:0]
	if cap(t.pending) > 16<<10 {
		t.pending = nil
	}
	return err
}

// isModification reports whether a packet from the milter is a change of
// the message (SMFIR_ADDRCPT, DELRCPT, ADDRCPT_PAR, REPLBODY, ADDHEADER,
// INSHEADER, CHGHEADER, CHGFROM, QUARANTINE), which the MTA reads only
// with the final response that follows it.
func isModification(cmd byte) bool {
	switch cmd {
	case '+', '-', '2', 'b', 'h', 'i', 'm', 'e', 'q':
		return true
	}
	return false
}

// abort closes the connection under the session; the session then ends
// and the library calls Close.
func (t *trackedConn) abort() { t.Conn.Close() }

// Close is called by the library when its session goroutine ends.
func (t *trackedConn) Close() error {
	err := net.ErrClosed
	t.once.Do(func() {
		err = t.Conn.Close()
		close(t.done)
		t.c.closed()
	})
	return err
}

// deadlineReader reads from the connection, each read bounded by the
// idle timeout (or the library's earlier deadline).
type deadlineReader struct{ t *trackedConn }

func (d deadlineReader) Read(p []byte) (int, error) {
	t := d.t
	dl := time.Now().Add(t.idle)
	if !t.userDeadline.IsZero() && t.userDeadline.Before(dl) {
		dl = t.userDeadline
	}
	t.Conn.SetReadDeadline(dl)
	// Shutdown sets the deadline to now after marking the server as
	// draining: check again, in case it did so before the line above.
	if t.c.drainIdle() {
		return 0, io.EOF
	}
	n, err := t.Conn.Read(p)
	if n > 0 {
		t.ack.ack()
	}
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		if t.c.drainIdle() {
			return n, io.EOF
		}
		if t.userDeadline.IsZero() || dl.Before(t.userDeadline) {
			t.timer = true
			err = fmt.Errorf("milter: nothing from the MTA for %v (limits.idle_timeout): %w", t.idle, err)
		}
	}
	return n, err
}
