//go:build !linux

package bridge

import (
	"io"
	"net"
	"net/netip"
)

const legRecvBuffer = 2 << 20

// tuneSocket enlarges a leg socket's receive buffer as far as the system allows.
func tuneSocket(c *net.UDPConn) { c.SetReadBuffer(legRecvBuffer) }

// kernelStamp: receive timestamps are read on Linux only.
func kernelStamp(*stampBuf, int) int64 { return 0 }

func keepStamps(netip.Addr) io.Closer { return nil }
