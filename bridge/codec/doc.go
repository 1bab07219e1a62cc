// Package codec holds the audio codecs bib decodes and encodes for
// recordings, supervisor mixes and the load harness (G.711 mu-law and A-law,
// G.722), the RFC 4733 telephone-event payload parser, a resampler and small
// DSP helpers (tone generation, Goertzel detection).
//
// The relay never uses this package: relayed packets are passed through
// untouched. Every encoder and decoder works on caller-owned buffers and does
// not allocate per frame.
package codec
