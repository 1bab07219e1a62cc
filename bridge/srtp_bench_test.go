package bridge

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
)

// BenchmarkRelaySRTP is BenchmarkRelay for a call whose party a sends SRTP:
// each packet is authenticated and decrypted (into the reader's scratch
// buffer) before the encrypted datagram is relayed unchanged. The packets
// are sealed before the timer starts, so the sender's cost is the same as
// for the "plain" rows, which relay the same packets unencrypted through
// the same harness.
func BenchmarkRelaySRTP(b *testing.B) {
	for _, bc := range []struct {
		name, io, suite string
		tap             bool
	}{
		{"plain/bib", "goroutine", "", false},
		{"plain/bib-epoll", "epoll", "", false},
		{"srtp80/bib", "goroutine", SuiteAES128SHA1_80, false},
		{"srtp80/bib-epoll", "epoll", SuiteAES128SHA1_80, false},
		{"srtp80/bib-with-tap", "goroutine", SuiteAES128SHA1_80, true},
		{"srtp80/bib-epoll-with-tap", "epoll", SuiteAES128SHA1_80, true},
		{"srtp32/bib-epoll", "epoll", SuiteAES128SHA1_32, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			if bc.io == "epoll" && !ioSupported {
				b.Skip("no epoll engine here")
			}
			var key *SRTPKey
			if bc.suite != "" {
				k := mustKey(b, bc.suite)
				key = &k
			}
			e := testEngineIO(b, freeRange(b), bc.io)
			c, pa, pb := setupSRTPCall(b, e, key, nil)
			if bc.tap {
				c.AddTap(nopTap{})
			}
			la, _ := c.Leg(SideA).Local()
			pkts := sealedStream(b, key, b.N)
			b.ReportAllocs()
			pumpPackets(b, pa.conn, pb.conn, la, pkts, 64)
			c.Close("bench")
			if st := c.Stats().Legs[0]; st.SRTPAuthFailed+st.SRTPReplayed+st.Malformed != 0 {
				b.Fatalf("relay rejected packets: %+v", st)
			}
		})
	}
}

// sealedStream returns n consecutive 160-byte PCMU packets, sealed with k
// (plain if k is nil), in one slab.
func sealedStream(b *testing.B, k *SRTPKey, n int) [][]byte {
	plain := rtpPacket(b, 0x1234, 0, 0, make([]byte, 160))
	size := len(plain) + srtpMaxTrailer
	slab := make([]byte, n*size)
	out := make([][]byte, n)
	var ctx *srtpCtx
	if k != nil {
		var err error
		if ctx, err = newSRTPCtx(*k, false); err != nil {
			b.Fatal(err)
		}
	}
	for i := range out {
		binary.BigEndian.PutUint16(plain[2:4], uint16(i))
		binary.BigEndian.PutUint32(plain[4:8], uint32(i)*160)
		dst := slab[i*size : (i+1)*size : (i+1)*size]
		if ctx == nil {
			out[i] = dst[:copy(dst, plain)]
			continue
		}
		x, err := ctx.encrypt(dst, plain)
		if err != nil {
			b.Fatal(err)
		}
		out[i] = x
	}
	return out
}

// pumpPackets is pumpTo (relay_bench_test.go) sending the given packets, in
// order, to one destination.
func pumpPackets(b *testing.B, a, bConn *net.UDPConn, dst netip.AddrPort, pkts [][]byte, window int64) {
	pumpWith(b, a, bConn, window, func(i int) ([]byte, netip.AddrPort) { return pkts[i], dst })
}

// BenchmarkSRTPOpen is the relay's added work per SRTP packet alone:
// authenticate and decrypt into the scratch buffer, fill the tap's Packet.
func BenchmarkSRTPOpen(b *testing.B) {
	for _, suite := range []string{SuiteAES128SHA1_80, SuiteAES128SHA1_32} {
		b.Run(suite, func(b *testing.B) {
			k := mustKey(b, suite)
			in, err := newSRTPCtx(k, true)
			if err != nil {
				b.Fatal(err)
			}
			const ring = 1 << 16 // distinct indexes: the replay check passes
			pkts := sealedStream(b, &k, ring)
			dst := make([]byte, readBufSize)
			var pkt Packet
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if i == ring {
					b.StopTimer() // the stream starts over: a new context, as for a new key
					in, _ = newSRTPCtx(k, true)
					i = 0
					b.StartTimer()
				}
				if r := in.open(pkts[i], dst, &pkt); r != srtpOK {
					b.Fatalf("packet %d: result %d", i, r)
				}
				i++
			}
		})
	}
}

// BenchmarkSRTPSeal is what sealing costs a fork or supervisor packet
// alone: encrypt and authenticate into the preallocated buffer.
func BenchmarkSRTPSeal(b *testing.B) {
	for _, suite := range []string{SuiteAES128SHA1_80, SuiteAES128SHA1_32} {
		b.Run(suite, func(b *testing.B) {
			out, err := newSRTPCtx(mustKey(b, suite), false)
			if err != nil {
				b.Fatal(err)
			}
			plain := rtpPacket(b, 0x1234, 0, 0, make([]byte, 160))
			var dst [maxDatagram + srtpMaxTrailer]byte
			b.ReportAllocs()
			var i uint16
			for b.Loop() {
				i++
				binary.BigEndian.PutUint16(plain[2:4], i)
				if _, err := out.encrypt(dst[:], plain); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkForkSRTP is BenchmarkForkRTP's non-blocking path with and
// without encryption: the difference is the cost of sealing a fork packet.
func BenchmarkForkSRTP(b *testing.B) {
	for _, suite := range []string{"", SuiteAES128SHA1_80, SuiteAES128SHA1_32} {
		name := "plain"
		if suite != "" {
			name = suite
		}
		b.Run(name, func(b *testing.B) {
			p := newForkPair(b, ForkSendNonBlocking, nil)
			if suite != "" {
				k := mustKey(b, suite)
				if err := p.f.SetRoute(ForkRoute{Addr: p.recv.LocalAddr().(*net.UDPAddr).AddrPort(), PT: map[uint8]ForkPT{0: {Out: 0, Rate: 8000}}, SRTP: &k}); err != nil {
					b.Fatal(err)
				}
			}
			benchForkSend(b, p)
			if e := p.f.C.SendErrors.Load(); e > 0 {
				b.Fatalf("%d send errors", e)
			}
		})
	}
}
