package load

import (
	"math/rand/v2"
	"time"
)

// Impairment is what the senders do to their own packets, like a bad
// network between a party and the bridge. The harness applies it before
// transmission, so the bridge sees the damage and the harness knows exactly
// what it did: rtp.sent counts packets that went on the wire, and loss is
// measured against that, not against the packets deliberately dropped.
type Impairment struct {
	// Loss is the probability of dropping a packet (0..1).
	Loss float64 `json:"loss"`
	// Duplicate is the probability of sending a packet twice.
	Duplicate float64 `json:"duplicate"`
	// Reorder is the probability of holding a packet back and sending it
	// right after the next one.
	Reorder float64 `json:"reorder"`
	// Jitter delays each packet by a uniform random time in [0, Jitter).
	Jitter time.Duration `json:"jitter_ns"`
	// Seed makes the choices reproducible: the same seed gives every
	// stream the same sequence of decisions.
	Seed uint64 `json:"seed"`
}

// Active reports whether any impairment is configured.
func (im Impairment) Active() bool {
	return im.Loss > 0 || im.Duplicate > 0 || im.Reorder > 0 || im.Jitter > 0
}

// decision is what to do with one packet.
type decision struct {
	drop  bool
	dup   bool
	hold  bool          // send after the next packet of the stream
	delay time.Duration // extra delay before sending
}

// impairer draws decisions for one stream from its own generator.
type impairer struct {
	cfg Impairment
	rng rand.PCG
}

func (ip *impairer) init(cfg Impairment, stream uint64) {
	ip.cfg = cfg
	ip.rng.Seed(cfg.Seed, stream*0x9e3779b97f4a7c15+1)
}

func (ip *impairer) float() float64 { return float64(ip.rng.Uint64()>>11) / (1 << 53) }

// next decides the fate of the next packet. With no impairment it draws
// nothing.
func (ip *impairer) next() decision {
	var d decision
	c := &ip.cfg
	if c.Loss > 0 && ip.float() < c.Loss {
		d.drop = true
		return d
	}
	if c.Duplicate > 0 && ip.float() < c.Duplicate {
		d.dup = true
	}
	if c.Reorder > 0 && ip.float() < c.Reorder {
		d.hold = true
	}
	if c.Jitter > 0 {
		d.delay = time.Duration(ip.float() * float64(c.Jitter))
	}
	return d
}
