package recorder

import "fmt"

// Config tunes local recording. Zero values are not defaults: start from
// Defaults() and override.
type Config struct {
	// JitterMS is the jitter buffer depth in milliseconds: audio is written
	// once it is this old on the call clock, and packets arriving later than
	// that are counted late. Default 60, range 20..2000.
	JitterMS int `yaml:"jitter_ms"`
	// MonoFiles also writes one mono file per party (tracks "near", "far").
	// Default false.
	MonoFiles bool `yaml:"mono_files"`
	// MixedFile also writes a mono mix of both parties (track "mixed").
	// Default false.
	MixedFile bool `yaml:"mixed_file"`
	// MaskDTMF replaces RFC 4733 digits with "*" in the metadata. Default true.
	MaskDTMF bool `yaml:"mask_dtmf"`
	// QueuePackets is the per-direction queue between the relay and the
	// recorder, in packets; overflow is dropped, counted and recorded as a gap.
	// Rounded up to a power of two. Default 512, range 16..65536.
	QueuePackets int `yaml:"queue_packets"`
}

// Defaults returns the default configuration.
func Defaults() Config {
	return Config{JitterMS: 60, MaskDTMF: true, QueuePackets: 512}
}

// Validate reports the first out-of-range field.
func (c Config) Validate() error {
	if c.JitterMS < 20 || c.JitterMS > 2000 {
		return fmt.Errorf("%w: jitter_ms %d not in 20..2000", ErrConfig, c.JitterMS)
	}
	if c.QueuePackets < 16 || c.QueuePackets > 65536 {
		return fmt.Errorf("%w: queue_packets %d not in 16..65536", ErrConfig, c.QueuePackets)
	}
	return nil
}
