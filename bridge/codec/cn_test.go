package codec

import (
	"errors"
	"testing"
)

func TestIsCN(t *testing.T) {
	tests := []struct {
		pt   uint8
		name string
		want bool
	}{
		{13, "", true},
		{13, "CN", true},
		{118, "cn", true},
		{0, "PCMU", false},
		{101, "telephone-event", false},
	}
	for _, tt := range tests {
		if got := IsCN(tt.pt, tt.name); got != tt.want {
			t.Errorf("IsCN(%d, %q) = %v, want %v", tt.pt, tt.name, got, tt.want)
		}
	}
}

func TestParseCN(t *testing.T) {
	tests := []struct {
		name    string
		payload []byte
		want    uint8
		wantErr bool
	}{
		{"level only", []byte{0x40}, 64, false},
		{"with reflection coefficients", []byte{0x1E, 0x80, 0x7F}, 30, false},
		{"reserved bit ignored", []byte{0xFF}, 127, false},
		{"empty", nil, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCN(tt.payload)
			if tt.wantErr != (err != nil) || (err != nil && !errors.Is(err, ErrShortPayload)) {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("level = %d, want %d", got, tt.want)
			}
		})
	}
}

func FuzzParseCN(f *testing.F) {
	f.Add([]byte{0x40})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, payload []byte) {
		level, err := ParseCN(payload)
		if (err != nil) != (len(payload) == 0) {
			t.Fatalf("err %v for %d bytes", err, len(payload))
		}
		if level > 127 {
			t.Fatalf("level %d", level)
		}
	})
}
