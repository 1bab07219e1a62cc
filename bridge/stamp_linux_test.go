package bridge

import (
	"net"
	"testing"
	"time"
)

// The receive time comes from the kernel: a datagram read 50 ms after it
// arrived is stamped with its arrival, not with the read.
func TestKernelStamp(t *testing.T) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tuneSocket(c)
	// The kernel turns stamping on a moment after the first socket asks
	// (the engine keeps a socket asking for its whole life: keepStamps).
	time.Sleep(20 * time.Millisecond)
	s, err := net.DialUDP("udp", nil, c.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	sent := time.Now()
	if _, err := s.Write([]byte("rtp")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	var b stampBuf
	buf := make([]byte, 64)
	_, oobn, _, _, err := c.ReadMsgUDPAddrPort(buf, b.bytes())
	if err != nil {
		t.Fatal(err)
	}
	read := time.Now()
	k := kernelStamp(&b, oobn)
	if k == 0 {
		t.Fatal("no SCM_TIMESTAMPNS control message")
	}
	if k < sent.UnixNano() || k > read.UnixNano()-40e6 {
		t.Fatalf("stamp %d not between the send %d and 40 ms before the read %d", k, sent.UnixNano(), read.UnixNano())
	}
	// On the call's clock: the arrival, not the read.
	call := &Call{base: sent}
	if a := call.arrival(read, k); a < 0 || a > int64(10*time.Millisecond) {
		t.Fatalf("arrival %v after the send, want under 10 ms", time.Duration(a))
	}
	// Garbage control data is no stamp.
	for i := range b {
		b[i] = ^uint64(0)
	}
	if kernelStamp(&b, oobn) != 0 || kernelStamp(&b, 3) != 0 {
		t.Fatal("garbage control data read as a stamp")
	}
	if call.arrival(read, read.UnixNano()+1e6) != int64(read.Sub(sent)) {
		t.Fatal("a stamp in the future is not ignored")
	}
}
