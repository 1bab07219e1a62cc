package bridge

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
)

// PortRange is an inclusive UDP port range for RTP, written "min-max".
type PortRange struct{ Min, Max int }

// ParsePortRange parses "20000-29999".
func ParsePortRange(s string) (PortRange, error) {
	lo, hi, ok := strings.Cut(strings.TrimSpace(s), "-")
	if !ok {
		return PortRange{}, fmt.Errorf("port range %q: want MIN-MAX", s)
	}
	a, err1 := strconv.Atoi(strings.TrimSpace(lo))
	b, err2 := strconv.Atoi(strings.TrimSpace(hi))
	if err1 != nil || err2 != nil || a < 1024 || b > 65535 || b-a < 3 {
		return PortRange{}, fmt.Errorf("port range %q: want MIN-MAX with 1024 <= MIN, MAX <= 65535 and room for two pairs", s)
	}
	return PortRange{Min: a, Max: b}, nil
}

func (r PortRange) String() string { return fmt.Sprintf("%d-%d", r.Min, r.Max) }

// portPool hands out even/odd (RTP/RTCP) port pairs from a range and binds
// them. Allocation is rare (once per leg) and takes a mutex.
type portPool struct {
	ip    netip.Addr
	first int // first even port
	mu    sync.Mutex
	used  []bool // per pair
	next  int    // next pair index to try (round robin so ports are not reused at once)
	inUse int
}

func newPortPool(ip netip.Addr, r PortRange) *portPool {
	first := r.Min + r.Min%2
	n := (r.Max - first + 1) / 2
	return &portPool{ip: ip, first: first, used: make([]bool, n)}
}

// capacity returns the number of pairs in the pool.
func (p *portPool) capacity() int { return len(p.used) }

// allocate binds an RTP socket on an even port and an RTCP socket on the
// next odd port. Ports taken by other programs are skipped.
func (p *portPool) allocate() (rtpConn, rtcpConn *net.UDPConn, pair int, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.used)
	for tries := 0; tries < n; tries++ {
		i := p.next
		p.next = (p.next + 1) % n
		if p.used[i] {
			continue
		}
		port := p.first + 2*i
		a, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.ip, uint16(port))))
		if err != nil {
			continue
		}
		b, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.ip, uint16(port+1))))
		if err != nil {
			a.Close()
			continue
		}
		tuneSocket(a)
		tuneSocket(b)
		p.used[i] = true
		p.inUse++
		return a, b, i, nil
	}
	return nil, nil, -1, ErrPortsExhausted
}

func (p *portPool) release(pair int) {
	if pair < 0 {
		return
	}
	p.mu.Lock()
	if p.used[pair] {
		p.used[pair] = false
		p.inUse--
	}
	p.mu.Unlock()
}

func (p *portPool) stats() (inUse, capacity int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.inUse, len(p.used)
}
