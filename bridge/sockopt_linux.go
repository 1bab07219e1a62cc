package bridge

import (
	"io"
	"net"
	"net/netip"
	"unsafe"

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
		// The kernel's receive time of every datagram (SCM_TIMESTAMPNS):
		// arrival times then do not depend on when the loop got to the
		// socket (after another socket's batch, its sends, a GC pause).
		unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	})
	if !forced {
		c.SetReadBuffer(legRecvBuffer)
	}
}

// kernelStamp returns the SCM_TIMESTAMPNS receive time (Unix nanoseconds)
// in the first oobn bytes of b, or 0 if there is none.
func kernelStamp(b *stampBuf, oobn int) int64 {
	oob := b.bytes()
	oob = oob[:min(oobn, len(oob))]
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(oob) {
			return 0
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS && l >= unix.CmsgLen(int(unsafe.Sizeof(unix.Timespec{}))) {
			ts := (*unix.Timespec)(unsafe.Pointer(&oob[unix.CmsgLen(0)]))
			return ts.Sec*1e9 + ts.Nsec
		}
		oob = oob[min(unix.CmsgSpace(l-unix.CmsgLen(0)), len(oob)):]
	}
	return 0
}

// keepStamps opens a socket that asks for receive timestamps and is held for
// the engine's life. The kernel stamps datagrams on arrival only while some
// socket wants stamps, and turns that on a moment after the first one asks
// (a deferred static key); without a keeper every first call after an idle
// spell would have its first packets stamped when read. Nothing is sent or
// received on it. nil if it cannot be opened (stamps then start a little
// later).
func keepStamps(ip netip.Addr) io.Closer {
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
	if err != nil {
		return nil
	}
	tuneSocket(c)
	return c
}
