package bridge

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrBadRelease is wrapped by every error ParseRelease returns.
var ErrBadRelease = errors.New("bad call-manager release")

// Release is a parsed call-manager release. Only Major and Minor decide the
// version gate; the rest is kept for display and ordering.
//
// The shapes accepted (PROTOCOL.md section 5):
//
//	9.1(2)            Major.Minor(Maint)
//	11.0(1a)          maintenance letter (kept in Raw only)
//	10.5(2)SU3        service update
//	12.5(1)SU4a       service-update letter (kept in Raw only)
//	11.5.1.10000-6    full dotted build Major.Minor.Maint.Build[-Patch]
//	14, 14SU3, 14 SU3 major-only names of 14 and later (Minor 0)
//	15.0.1.12900-234
type Release struct {
	Major int    `json:"major"`
	Minor int    `json:"minor"`
	Maint int    `json:"maint,omitempty"` // the (n) of 9.1(2), or the third dotted number
	Build int    `json:"build,omitempty"` // the fourth dotted number of 11.5.1.10000-6
	SU    int    `json:"su,omitempty"`    // service update level, 0 for none
	Raw   string `json:"raw"`             // the string as given (trimmed)
}

// AtLeast reports whether r is major.minor or later.
func (r Release) AtLeast(major, minor int) bool {
	if r.Major != major {
		return r.Major > major
	}
	return r.Minor >= minor
}

// String returns a canonical spelling: 12.5(1)SU4, 11.5.1.10000, 14.0SU3.
// Letters and the build's -patch suffix survive only in Raw.
func (r Release) String() string {
	var b strings.Builder
	b.WriteString(strconv.Itoa(r.Major))
	b.WriteByte('.')
	b.WriteString(strconv.Itoa(r.Minor))
	switch {
	case r.Build > 0:
		fmt.Fprintf(&b, ".%d.%d", r.Maint, r.Build)
	case r.Maint > 0:
		fmt.Fprintf(&b, "(%d)", r.Maint)
	}
	if r.SU > 0 {
		fmt.Fprintf(&b, "SU%d", r.SU)
	}
	return b.String()
}

// Limits that keep every number far from overflow and reject absurd input.
const (
	maxReleaseMajor = 99
	maxReleaseMinor = 99
	maxReleaseMaint = 999
	maxReleaseBuild = 999999
	maxReleaseSU    = 99
	maxReleaseLen   = 40
)

// ParseRelease parses a call-manager release string. field names the config
// key or flag the value came from; errors name it and the value and wrap
// ErrBadRelease.
func ParseRelease(field, s string) (Release, error) {
	raw := strings.TrimSpace(s)
	fail := func(why string) (Release, error) {
		return Release{}, fmt.Errorf("%s: %w %q: %s (want a shape like 9.1(2), 12.5(1)SU4, 14SU3 or 11.5.1.10000-6)", field, ErrBadRelease, s, why)
	}
	if raw == "" {
		return fail("empty")
	}
	if len(raw) > maxReleaseLen {
		return fail("too long")
	}
	p := releaseScanner{s: raw}
	r := Release{Raw: raw}
	var ok bool
	if r.Major, ok = p.number(maxReleaseMajor); !ok {
		return fail("must start with the major version number")
	}
	if r.Major == 0 {
		return fail("major version 0 does not exist")
	}
	hasMinor := false
	if p.eat('.') {
		if r.Minor, ok = p.number(maxReleaseMinor); !ok {
			return fail("a minor version number must follow the dot")
		}
		hasMinor = true
	}
	switch {
	case hasMinor && p.eat('('):
		// 9.1(2), 11.0(1a)
		if r.Maint, ok = p.number(maxReleaseMaint); !ok {
			return fail("a maintenance number must follow '('")
		}
		p.letter()
		if !p.eat(')') {
			return fail("missing ')'")
		}
	case hasMinor && p.eat('.'):
		// 11.5.1, 11.5.1.10000, 11.5.1.10000-6
		if r.Maint, ok = p.number(maxReleaseMaint); !ok {
			return fail("a maintenance number must follow the second dot")
		}
		if p.eat('.') {
			if r.Build, ok = p.number(maxReleaseBuild); !ok {
				return fail("a build number must follow the third dot")
			}
			if p.eat('-') {
				if _, ok = p.number(maxReleaseBuild); !ok {
					return fail("a patch number must follow '-'")
				}
			}
		}
	}
	// Optional service update: SU3, SU4a, " SU3"; not after a dotted build,
	// which already names the exact build.
	rest := p.s[p.i:]
	if trimmed := strings.TrimLeft(rest, " "); len(trimmed) >= 2 && strings.EqualFold(trimmed[:2], "SU") {
		if r.Build > 0 {
			return fail("a dotted build number cannot carry an SU suffix")
		}
		p.i += len(rest) - len(trimmed) + 2
		if r.SU, ok = p.number(maxReleaseSU); !ok {
			return fail("a service-update number must follow SU")
		}
		if r.SU == 0 {
			return fail("SU0 does not exist")
		}
		p.letter()
	}
	if p.i != len(p.s) {
		return fail(fmt.Sprintf("unexpected %q", p.s[p.i:]))
	}
	return r, nil
}

// releaseScanner walks a release string left to right.
type releaseScanner struct {
	s string
	i int
}

func (p *releaseScanner) eat(c byte) bool {
	if p.i < len(p.s) && p.s[p.i] == c {
		p.i++
		return true
	}
	return false
}

// number reads 1 to 6 decimal digits no larger than limit.
func (p *releaseScanner) number(limit int) (int, bool) {
	start := p.i
	n := 0
	for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
		if p.i-start >= 6 {
			return 0, false
		}
		n = n*10 + int(p.s[p.i]-'0')
		p.i++
	}
	if p.i == start || n > limit {
		return 0, false
	}
	return n, true
}

// letter skips one optional letter (11.0(1a), SU4a; either case).
func (p *releaseScanner) letter() {
	if p.i < len(p.s) && (p.s[p.i]|0x20 >= 'a' && p.s[p.i]|0x20 <= 'z') {
		p.i++
	}
}
