package bridge

import (
	"errors"
	"strconv"
	"strings"
	"testing"
)

func TestParseRelease(t *testing.T) {
	tests := []struct {
		in   string
		want Release // Raw is checked separately
	}{
		{"9.1(2)", Release{Major: 9, Minor: 1, Maint: 2}},
		{"10.5(2)SU3", Release{Major: 10, Minor: 5, Maint: 2, SU: 3}},
		{"11.0(1a)", Release{Major: 11, Minor: 0, Maint: 1}},
		{"11.0(1A)", Release{Major: 11, Minor: 0, Maint: 1}},
		{"11.5.1.10000-6", Release{Major: 11, Minor: 5, Maint: 1, Build: 10000}},
		{"12.5(1)SU4", Release{Major: 12, Minor: 5, Maint: 1, SU: 4}},
		{"12.5(1)SU4a", Release{Major: 12, Minor: 5, Maint: 1, SU: 4}},
		{"14SU3", Release{Major: 14, SU: 3}},
		{"14 SU3", Release{Major: 14, SU: 3}},
		{"14su3", Release{Major: 14, SU: 3}},
		{"14.0(1)SU3", Release{Major: 14, Maint: 1, SU: 3}},
		{"15", Release{Major: 15}},
		{"15.0.1.12900-234", Release{Major: 15, Minor: 0, Maint: 1, Build: 12900}},
		{"8.6", Release{Major: 8, Minor: 6}},
		{"8.6(2)", Release{Major: 8, Minor: 6, Maint: 2}},
		{"11.5", Release{Major: 11, Minor: 5}},
		{"11.5.1", Release{Major: 11, Minor: 5, Maint: 1}},
		{"11.5.1.10000", Release{Major: 11, Minor: 5, Maint: 1, Build: 10000}},
		{"  12.0  ", Release{Major: 12}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseRelease("cluster.release", tt.in)
			if err != nil {
				t.Fatalf("ParseRelease(%q): %v", tt.in, err)
			}
			want := tt.want
			want.Raw = strings.TrimSpace(tt.in)
			if got != want {
				t.Fatalf("ParseRelease(%q) = %+v, want %+v", tt.in, got, want)
			}
		})
	}
}

func TestParseReleaseRejects(t *testing.T) {
	for _, in := range []string{
		"", "   ", "garbage", "x14", "0", "0.5", "9.", "9.x", "10.5(", "10.5(2", "10.5()", "10.5(2)SU",
		"10.5(2)SU0", "14SU", "14SU3b4", "11.5.1.10000-", "11.5.1.10000-6SU2", "11.5.1.",
		"100.0", "9.100", "-9.1", "+9.1", "9,1", "9.1(2)(3)", "9.1 (2)", "1234567", "15.0.1.12900-234-1",
		"14(1)", "9.1(2ab)", "9.1(2)SU1ab", "14SU3 extra", "９.１", "9.1(2)\x00", strings.Repeat("1", 50),
	} {
		t.Run(in, func(t *testing.T) {
			_, err := ParseRelease("--release", in)
			if err == nil {
				t.Fatalf("ParseRelease(%q) succeeded, want error", in)
			}
			if !errors.Is(err, ErrBadRelease) {
				t.Errorf("error %v does not wrap ErrBadRelease", err)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "--release: ") || !strings.Contains(msg, strconv.Quote(in)) {
				t.Errorf("error %q should name the field and quote the value", msg)
			}
		})
	}
}

func TestReleaseAtLeast(t *testing.T) {
	tests := []struct {
		rel          string
		major, minor int
		want         bool
	}{
		{"8.6(2)", 9, 0, false},
		{"9.0(1)", 9, 0, true},
		{"9.1(2)", 9, 0, true},
		{"10.5(2)SU3", 11, 0, false},
		{"11.0(1a)", 11, 0, true},
		{"11.5.1.10000-6", 12, 0, false},
		{"14SU3", 11, 0, true},
		{"15", 15, 0, true},
		{"15", 15, 1, false},
		{"6.0", 6, 0, true},
		{"5.1(3)", 6, 0, false},
	}
	for _, tt := range tests {
		r, err := ParseRelease("r", tt.rel)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.AtLeast(tt.major, tt.minor); got != tt.want {
			t.Errorf("%s.AtLeast(%d, %d) = %v, want %v", tt.rel, tt.major, tt.minor, got, tt.want)
		}
	}
}

func TestReleaseString(t *testing.T) {
	for in, want := range map[string]string{
		"9.1(2)":           "9.1(2)",
		"10.5(2)SU3":       "10.5(2)SU3",
		"11.0(1a)":         "11.0(1)",
		"11.5.1.10000-6":   "11.5.1.10000",
		"14SU3":            "14.0SU3",
		"15":               "15.0",
		"15.0.1.12900-234": "15.0.1.12900",
	} {
		r, err := ParseRelease("r", in)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.String(); got != want {
			t.Errorf("ParseRelease(%q).String() = %q, want %q", in, got, want)
		}
	}
}

// FuzzParseRelease: never panics; whatever parses has sane numbers and
// its canonical String parses back to the same numbers; errors name the field.
func FuzzParseRelease(f *testing.F) {
	for _, s := range []string{"9.1(2)", "10.5(2)SU3", "11.0(1a)", "11.5.1.10000-6", "12.5(1)SU4", "14SU3", "15",
		"15.0.1.12900-234", "8.6", "", "garbage", "14 SU3a", "9.1(2", "99.99(999)SU99z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRelease("field", s)
		if err != nil {
			if !errors.Is(err, ErrBadRelease) || !strings.HasPrefix(err.Error(), "field: ") {
				t.Fatalf("bad error shape: %v", err)
			}
			return
		}
		if r.Major < 1 || r.Major > maxReleaseMajor || r.Minor < 0 || r.Minor > maxReleaseMinor ||
			r.Maint < 0 || r.Build < 0 || r.SU < 0 || r.SU > maxReleaseSU {
			t.Fatalf("ParseRelease(%q) = %+v: out of range", s, r)
		}
		back, err := ParseRelease("field", r.String())
		if err != nil {
			t.Fatalf("canonical %q of %q does not parse: %v", r.String(), s, err)
		}
		back.Raw = r.Raw
		if back != r {
			t.Fatalf("round trip %q -> %q -> %+v, want %+v", s, r.String(), back, r)
		}
	})
}
