package bridge

import (
	"fmt"
	"net"
	"sync"
)

// AllocatePair binds an RTP/RTCP port pair (even/odd) from the engine's
// configured range on its media address, for a leg the engine does not own
// itself: a supervisor's RTP leg or a WebRTC session's ICE socket. release
// closes both sockets and returns the pair to the pool; it is idempotent.
func (e *Engine) AllocatePair() (rtp, rtcp *net.UDPConn, release func(), err error) {
	rtp, rtcp, pair, err := e.pool.allocate()
	if err != nil {
		e.T.PortFailures.Add(1)
		return nil, nil, nil, fmt.Errorf("allocate port pair: %w", err)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			rtp.Close()
			rtcp.Close()
			e.pool.release(pair)
		})
	}
	return rtp, rtcp, release, nil
}
