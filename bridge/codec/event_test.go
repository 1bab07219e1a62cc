package codec

import (
	"bytes"
	"errors"
	"testing"
)

func TestParseEvent(t *testing.T) {
	tests := []struct {
		name    string
		payload []byte
		want    Event
		digit   byte
		wantErr bool
	}{
		{"digit 5 start", []byte{0x05, 0x0A, 0x00, 0xA0}, Event{Code: 5, Volume: 10, Duration: 160}, '5', false},
		{"hash end", []byte{0x0B, 0x8A, 0x03, 0x20}, Event{Code: 11, End: true, Volume: 10, Duration: 800}, '#', false},
		{"star", []byte{0x0A, 0x00, 0x00, 0x00}, Event{Code: 10}, '*', false},
		{"D, R bit set and ignored", []byte{0x0F, 0xFF, 0xFF, 0xFF}, Event{Code: 15, End: true, Volume: 63, Duration: 0xFFFF}, 'D', false},
		{"A", []byte{0x0C, 0x00, 0x01, 0x00}, Event{Code: 12, Duration: 256}, 'A', false},
		{"flash is no digit", []byte{0x10, 0x00, 0x00, 0x50}, Event{Code: 16, Duration: 80}, 0, false},
		{"trailing redundancy ignored", []byte{0x01, 0x00, 0x00, 0x50, 0x02, 0x00}, Event{Code: 1, Duration: 80}, '1', false},
		{"empty", nil, Event{}, 0, true},
		{"three bytes", []byte{0x01, 0x80, 0x00}, Event{}, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseEvent(tt.payload)
			if tt.wantErr {
				if !errors.Is(err, ErrShortPayload) {
					t.Fatalf("err = %v, want ErrShortPayload", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
			if d := got.Digit(); d != tt.digit {
				t.Errorf("Digit() = %q, want %q", d, tt.digit)
			}
		})
	}
}

func TestEventEncode(t *testing.T) {
	e := Event{Code: 11, End: true, Volume: 10, Duration: 800}
	want := []byte{0x0B, 0x8A, 0x03, 0x20}
	if got := AppendEvent([]byte{0xEE}, e); !bytes.Equal(got, append([]byte{0xEE}, want...)) {
		t.Errorf("AppendEvent = % X", got)
	}
	buf := make([]byte, 6)
	if n := PutEvent(buf, e); n != EventSize || !bytes.Equal(buf[:n], want) {
		t.Errorf("PutEvent = %d, % X", n, buf)
	}
	if n := PutEvent(buf[:3], e); n != 0 {
		t.Errorf("PutEvent into 3 bytes = %d, want 0", n)
	}
	// Volume is 6 bits: a larger value must not spill into E or R.
	got, _ := ParseEvent(AppendEvent(nil, Event{Code: 1, Volume: 0xFF}))
	if got.End || got.Volume != 0x3F {
		t.Errorf("volume 0xFF encoded as %+v", got)
	}
}

func TestEventCodeDigits(t *testing.T) {
	for _, d := range []byte("0123456789*#ABCD") {
		code, ok := EventCode(d)
		if !ok {
			t.Fatalf("EventCode(%q) not ok", d)
		}
		if back := (Event{Code: code}).Digit(); back != d {
			t.Errorf("%q -> %d -> %q", d, code, back)
		}
	}
	if c, ok := EventCode('b'); !ok || c != 13 {
		t.Errorf("EventCode('b') = %d, %v", c, ok)
	}
	for _, d := range []byte("eE+ x") {
		if _, ok := EventCode(d); ok {
			t.Errorf("EventCode(%q) ok", d)
		}
	}
}

func FuzzParseEvent(f *testing.F) {
	f.Add([]byte{0x05, 0x0A, 0x00, 0xA0})
	f.Add([]byte{0x0B, 0x8A, 0x03, 0x20, 0x00})
	f.Add([]byte{0xFF, 0xFF, 0xFF, 0xFF})
	f.Add([]byte{0x01})
	f.Fuzz(func(t *testing.T, payload []byte) {
		e, err := ParseEvent(payload)
		if err != nil {
			if len(payload) >= EventSize {
				t.Fatalf("error for %d bytes: %v", len(payload), err)
			}
			return
		}
		// Re-encoding gives the payload back except the ignored R bit.
		got := AppendEvent(nil, e)
		want := []byte{payload[0], payload[1] &^ 0x40, payload[2], payload[3]}
		if !bytes.Equal(got, want) {
			t.Fatalf("% X re-encoded as % X", payload[:EventSize], got)
		}
		if d := e.Digit(); (d != 0) != (e.Code < 16) {
			t.Fatalf("code %d gave digit %q", e.Code, d)
		}
	})
}
