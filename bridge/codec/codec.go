package codec

import (
	"errors"
	"fmt"
	"strings"
)

// ErrUnsupported is returned for an encoding name this package cannot
// decode or encode.
var ErrUnsupported = errors.New("unsupported codec")

// Decoder turns one RTP payload into linear 16-bit PCM. Decoders with state
// (G.722) must see a stream's payloads in order; Reset clears the state after
// a gap or a source change.
type Decoder interface {
	// Decode writes the samples of payload into dst and returns how many it
	// wrote. dst must hold at least SamplesPerPayload(len(payload)).
	Decode(dst []int16, payload []byte) int
	// SampleRate is the rate of the PCM produced, in Hz (8000 for G.711,
	// 16000 for G.722).
	SampleRate() int
	// Samples returns how many PCM samples a payload of n bytes decodes to.
	Samples(n int) int
	Reset()
}

// Encoder turns linear 16-bit PCM into one RTP payload.
type Encoder interface {
	// Encode writes the payload for pcm into dst and returns its length.
	// dst must hold at least PayloadSize(len(pcm)).
	Encode(dst []byte, pcm []int16) int
	SampleRate() int
	// PayloadSize returns the payload bytes needed for n PCM samples.
	PayloadSize(n int) int
	Reset()
}

// Info describes a codec as SDP names it.
type Info struct {
	Name       string // rtpmap encoding name
	StaticPT   int    // RFC 3551 static payload type, or -1
	ClockRate  int    // RTP timestamp clock rate in Hz
	SampleRate int    // PCM sample rate in Hz
}

// Known codecs that bib can decode.
var (
	PCMU = Info{Name: "PCMU", StaticPT: 0, ClockRate: 8000, SampleRate: 8000}
	PCMA = Info{Name: "PCMA", StaticPT: 8, ClockRate: 8000, SampleRate: 8000}
	// G722's RTP clock is 8000 Hz although it samples at 16 kHz (RFC 3551
	// section 4.5.2): one timestamp tick is two PCM samples.
	G722 = Info{Name: "G722", StaticPT: 9, ClockRate: 8000, SampleRate: 16000}
)

// Lookup returns the Info for an encoding name (case-insensitive).
func Lookup(name string) (Info, bool) {
	switch strings.ToUpper(name) {
	case "PCMU":
		return PCMU, true
	case "PCMA":
		return PCMA, true
	case "G722":
		return G722, true
	}
	return Info{}, false
}

// NewDecoder returns a decoder for an encoding name.
func NewDecoder(name string) (Decoder, error) {
	switch strings.ToUpper(name) {
	case "PCMU":
		return ulawDecoder{}, nil
	case "PCMA":
		return alawDecoder{}, nil
	case "G722":
		return NewG722Decoder(), nil
	}
	return nil, fmt.Errorf("decoder %q: %w", name, ErrUnsupported)
}

// NewEncoder returns an encoder for an encoding name.
func NewEncoder(name string) (Encoder, error) {
	switch strings.ToUpper(name) {
	case "PCMU":
		return ulawEncoder{}, nil
	case "PCMA":
		return alawEncoder{}, nil
	case "G722":
		return NewG722Encoder(), nil
	}
	return nil, fmt.Errorf("encoder %q: %w", name, ErrUnsupported)
}
