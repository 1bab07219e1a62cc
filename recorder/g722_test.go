package recorder

import (
	"testing"

	"github.com/bib-project/bib/bridge"
	"github.com/bib-project/bib/bridge/codec"
	"github.com/pion/rtp"
)

// TestG722Fidelity: a far end speaking G.722 is recorded at 16 kHz, sample
// for sample what a G.722 decoder makes of its packets; the near end's G.711
// stays a 440 Hz tone on the left.
func TestG722Fidelity(t *testing.T) {
	h := newHarness(t, Defaults(), CallInfo{CallID: "g722"})
	media := pcmuMedia()
	media[1].Codecs = append([]bridge.Codec{{PT: 9, Name: "G722", Rate: 8000}}, media[1].Codecs...)
	h.answer(0, media)

	// 1 s of a 1 kHz tone at 16 kHz, 20 ms (320 samples, 160 bytes) per packet.
	var phase float64
	pcm16 := codec.AppendTone(nil, 16000, 1000, 16000, 0.3, &phase)
	enc, dec := codec.NewG722Encoder(), codec.NewG722Decoder()
	var items []item
	var want []int16
	out := make([]int16, 320)
	for k := range 50 {
		payload := make([]byte, 160)
		enc.Encode(payload, pcm16[k*320:(k+1)*320])
		n := dec.Decode(out, payload)
		want = append(want, out[:n]...)
		items = append(items, item{dir: bridge.BtoA, arrival: int64(k)*20*ms + 5*ms,
			hdr:     rtp.Header{Version: 2, PayloadType: 9, SequenceNumber: uint16(100 + k), Timestamp: uint32(7000 + k*160), SSRC: 9},
			payload: payload})
	}
	a := newParty(t, bridge.AtoB, "PCMU", 0, tone(440, 2000, 3000, 8000))
	items = append(items, a.packets(constDelay(5*ms))...)
	h.feed(items)
	m, info, left, right := h.end(1100 * ms)
	if info.Rate != 16000 || m.SampleRate != 16000 {
		t.Fatalf("rate %d", info.Rate)
	}
	at := 2 * samplePos(5*ms, 0)
	for i, v := range want {
		if right[at+i] != v {
			t.Fatalf("right sample %d = %d, want the G.722-decoded %d", i, right[at+i], v)
		}
	}
	if p := codec.Goertzel(right[at:at+16000], 1000, 16000); p < 0.01 {
		t.Errorf("1 kHz tone not found on the right channel (power %g)", p)
	}
	if p := codec.Goertzel(left[at:at+16000], 440, 16000); p < 0.001 {
		t.Errorf("440 Hz tone not found on the left channel (power %g)", p)
	}
	if countEvents(m, "unsupported_codec") != 0 {
		t.Errorf("G.722 reported unsupported: %+v", m.Events)
	}
}
