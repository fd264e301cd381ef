//go:build !linux

package milter

import "net"

// quickAcker is Linux's TCP_QUICKACK (quickack_linux.go); elsewhere ACKs
// are left to the system.
type quickAcker struct{}

func newQuickAcker(net.Conn) *quickAcker { return nil }

func (*quickAcker) ack() {}
