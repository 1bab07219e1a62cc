package bridge

import (
	"net"

	"golang.org/x/sys/unix"
)

// legRecvBuffer is the receive buffer of a leg's sockets. The kernel's
// default (about 208 KiB) fills in a few milliseconds under a flood of
// strangers' packets, and then the party's own packets are dropped before
// the read loop can filter anything. Memory is only used while packets wait.
const legRecvBuffer = 2 << 20

// tuneSocket enlarges a leg socket's receive buffer, past net.core.rmem_max
// when the process may (SO_RCVBUFFORCE needs CAP_NET_ADMIN), else as far as
// the system allows.
func tuneSocket(c *net.UDPConn) {
	raw, err := c.SyscallConn()
	if err != nil {
		return
	}
	var forced bool
	raw.Control(func(fd uintptr) {
		forced = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, legRecvBuffer) == nil
	})
	if !forced {
		c.SetReadBuffer(legRecvBuffer)
	}
}
