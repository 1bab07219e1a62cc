//go:build !linux

package bridge

import "net"

const legRecvBuffer = 2 << 20

// tuneSocket enlarges a leg socket's receive buffer as far as the system allows.
func tuneSocket(c *net.UDPConn) { c.SetReadBuffer(legRecvBuffer) }
