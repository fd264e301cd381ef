package milter

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"
)

// countingConn records what is written to it and in how many writes.
type countingConn struct {
	net.Conn
	writes int
	buf    bytes.Buffer
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes++
	return c.buf.Write(p)
}

// TestChangesWrittenWithTheReply: the change packets of a message (here a
// header added, a header changed and a body replaced, each written by the
// library as a head and its data) go out in one write with the final
// response, in order; a reply without changes is one write too.
func TestChangesWrittenWithTheReply(t *testing.T) {
	cc := &countingConn{}
	tc := &trackedConn{Conn: cc}
	var want bytes.Buffer
	packet := func(cmd byte, data string) {
		head := make([]byte, 5)
		binary.BigEndian.PutUint32(head, uint32(1+len(data)))
		head[4] = cmd
		want.Write(head)
		want.WriteString(data)
		if data == "" {
			tc.Write(head) // the library writes a 1-byte packet whole
			return
		}
		tc.Write(head)
		tc.Write([]byte(data))
	}
	packet('h', "X-Cryptmilter-Signature\x00signed\x00")
	packet('m', "\x00\x00\x00\x01Subject\x00[...]\x00")
	packet('b', string(bytes.Repeat([]byte("body\r\n"), 2000)))
	if cc.writes != 0 {
		t.Fatalf("%d writes before the final response", cc.writes)
	}
	packet('a', "")
	if cc.writes != 1 || !bytes.Equal(cc.buf.Bytes(), want.Bytes()) {
		t.Errorf("%d writes, %d bytes; want 1 write of %d bytes in order", cc.writes, cc.buf.Len(), want.Len())
	}
	packet('c', "")
	if cc.writes != 2 {
		t.Errorf("a reply alone took %d writes", cc.writes-1)
	}
}
