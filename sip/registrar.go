package sip

import (
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"
)

// Registration is one binding in the location service (RFC 3261 section
// 10): an address-of-record user reachable at a contact URI until Expires.
type Registration struct {
	User      string    `json:"user"`
	Contact   string    `json:"contact"`
	Transport string    `json:"transport"`
	Source    string    `json:"source"` // where the REGISTER came from (ip:port)
	Updated   time.Time `json:"updated"`
	Expires   time.Time `json:"expires"`
	CallID    string    `json:"-"`
	CSeq      uint32    `json:"-"`
	uri       sipmsg.Uri
}

// registrar is the in-memory location service.
type registrar struct {
	now func() time.Time
	mu  sync.Mutex
	m   map[string][]Registration // by user, most recent last
}

func newRegistrar(now func() time.Time) *registrar {
	return &registrar{now: now, m: map[string][]Registration{}}
}

// lookup returns the user's most recently refreshed live contact.
func (r *registrar) lookup(user string) (Registration, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	regs := r.prune(user, now)
	if len(regs) == 0 {
		return Registration{}, false
	}
	return regs[len(regs)-1], true
}

// prune drops expired bindings of user; r.mu is held.
func (r *registrar) prune(user string, now time.Time) []Registration {
	regs := slices.DeleteFunc(r.m[user], func(g Registration) bool { return !now.Before(g.Expires) })
	if len(regs) == 0 {
		delete(r.m, user)
		return nil
	}
	r.m[user] = regs
	return regs
}

// all returns every live binding, sorted by user then age.
func (r *registrar) all() []Registration {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	var out []Registration
	for user := range r.m {
		out = append(out, r.prune(user, now)...)
	}
	slices.SortStableFunc(out, func(a, b Registration) int { return strings.Compare(a.User, b.User) })
	return out
}

// registerResult is what handleRegister decided.
type registerResult struct {
	code       int
	warning    string
	minExpires int // for 423
	bindings   []Registration
}

// apply processes a REGISTER (RFC 3261 section 10.3, steps 5-8; no
// authentication yet).
func (r *registrar) apply(req *sipmsg.Request, minExp, defExp int) registerResult {
	to := req.To()
	if to == nil || to.Address.User == "" {
		return registerResult{code: 400, warning: "REGISTER without a To user (address of record)"}
	}
	user := to.Address.User
	callID := ""
	if h := req.CallID(); h != nil {
		callID = h.Value()
	}
	var cseq uint32
	if h := req.CSeq(); h != nil {
		cseq = h.SeqNo
	}
	defaultExp := defExp
	if h := req.GetHeader("Expires"); h != nil {
		v, err := strconv.Atoi(strings.TrimSpace(h.Value()))
		if err != nil || v < 0 {
			return registerResult{code: 400, warning: "Expires header is not a number of seconds"}
		}
		defaultExp = v
	}
	contacts := req.GetHeaders("Contact")
	now := r.now()

	r.mu.Lock()
	defer r.mu.Unlock()
	regs := r.prune(user, now)
	if len(contacts) == 0 {
		// A query: return the current bindings (section 10.3 step 8).
		return registerResult{code: 200, bindings: slices.Clone(regs)}
	}
	type change struct {
		uri sipmsg.Uri
		exp int
	}
	var changes []change
	for _, h := range contacts {
		ch, ok := h.(*sipmsg.ContactHeader)
		if !ok {
			return registerResult{code: 400, warning: "unparsable Contact header"}
		}
		if ch.Address.Wildcard {
			// Section 10.3 step 6: "*" only with Expires: 0 and alone.
			if len(contacts) != 1 || defaultExp != 0 {
				return registerResult{code: 400, warning: "Contact: * needs Expires: 0 and no other contact"}
			}
			delete(r.m, user)
			return registerResult{code: 200}
		}
		exp := defaultExp
		if v, ok := ch.Params.Get("expires"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil || n < 0 {
				return registerResult{code: 400, warning: "contact expires parameter is not a number of seconds"}
			}
			exp = n
		}
		if exp > 0 && exp < minExp {
			return registerResult{code: 423, minExpires: minExp, warning: "expiry " + strconv.Itoa(exp) + "s is below the minimum " + strconv.Itoa(minExp) + "s"}
		}
		changes = append(changes, change{uri: *ch.Address.Clone(), exp: exp})
	}
	for _, c := range changes {
		key := c.uri.Addr()
		i := slices.IndexFunc(regs, func(g Registration) bool { return g.uri.Addr() == key })
		if i >= 0 {
			old := regs[i]
			// Section 10.3 step 7: an out-of-order REGISTER for the same Call-ID is ignored.
			if old.CallID == callID && cseq <= old.CSeq {
				continue
			}
			regs = slices.Delete(regs, i, i+1)
		}
		if c.exp == 0 {
			continue
		}
		regs = append(regs, Registration{
			User:      user,
			Contact:   c.uri.String(),
			Transport: req.Transport(),
			Source:    req.Source(),
			Updated:   now,
			Expires:   now.Add(time.Duration(c.exp) * time.Second),
			CallID:    callID,
			CSeq:      cseq,
			uri:       c.uri,
		})
	}
	if len(regs) == 0 {
		delete(r.m, user)
	} else {
		r.m[user] = regs
	}
	return registerResult{code: 200, bindings: slices.Clone(regs)}
}
