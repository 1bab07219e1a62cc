package recorder

import (
	"testing"

	"github.com/bib-project/bib/bridge"
	"github.com/pion/rtp"
)

// FuzzPackets drives the recorder with arbitrary packet sequences (any
// payload type, sequence and timestamp steps, sizes, SSRCs, arrival steps):
// it must never panic, and the file must end with both channels exactly as
// long as the call.
func FuzzPackets(f *testing.F) {
	f.Add([]byte{0, 0, 1, 0, 160, 20, 160, 1, 0, 1, 0, 160, 20, 160})
	f.Add([]byte{0, 101, 1, 0, 0, 20, 4, 1, 13, 2, 0, 1, 200, 1, 0, 9, 0xff, 0xff, 0xff, 5, 160})
	f.Add([]byte{1, 8, 0x80, 0x80, 0x80, 0, 255, 0, 0, 0x7f, 0x7f, 0xff, 255})
	f.Fuzz(runFuzzInput)
}

func runFuzzInput(t *testing.T, b []byte) {
	r, err := newRecorder(Defaults(), CallInfo{CallID: "fuzz", Start: wall0, Media: pcmuMedia()}, discardStore{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var seq [2]uint16
	var ts [2]uint32
	var ssrc [2]uint32
	payload := make([]byte, 600)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	arrival := int64(0)
	for len(b) >= 7 {
		d := bridge.Direction(b[0] & 1)
		if b[0]&2 != 0 {
			ssrc[d]++
		}
		seq[d] += uint16(int8(b[2]))
		ts[d] += uint32(int32(int8(b[3]))*40) + uint32(b[4])<<uint(b[0]>>4)
		arrival += int64(b[5]) * ms / 4
		n := int(b[6]) * 3
		pkt := bridge.Packet{
			Header:  rtp.Header{Version: 2, PayloadType: b[1] & 127, SequenceNumber: seq[d], Timestamp: ts[d], SSRC: ssrc[d]},
			Payload: payload[:min(n, len(payload))], Arrival: arrival,
		}
		r.RTP(d, &pkt)
		r.drain(false)
		r.advance(arrival)
		b = b[7:]
	}
	end := arrival + 100*ms
	r.finish(end, wall0, "fuzz")
	if want := r.tl.pos(end); r.tl.written != want {
		t.Fatalf("wrote %d frames, call lasted %d", r.tl.written, want)
	}
	if r.wav.Frames() != r.tl.written {
		t.Fatalf("wav has %d frames, timeline %d", r.wav.Frames(), r.tl.written)
	}
}
