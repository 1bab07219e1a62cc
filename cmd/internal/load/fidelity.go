package load

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/bib-project/bib/bridge/codec"
	"github.com/bib-project/bib/cmd/internal/prompt"
)

// recMeta is the part of a recording's metadata (GET /api/v1/recordings)
// the harness uses.
type recMeta struct {
	ID   string `json:"id"`
	Near struct {
		Line   string `json:"line"`
		Addr   string `json:"addr"`
		Device string `json:"device"`
	} `json:"near"`
	StartTime  time.Time `json:"start_time"`
	DurationMS int64     `json:"duration_ms"`
	SampleRate int       `json:"sample_rate"`
	Channels   int       `json:"channels"`
	Status     string    `json:"status"`
}

// recPage accepts {"recordings": [...], "next": "..."} (or next_cursor,
// cursor) as well as a bare array.
type recPage struct {
	Recordings []recMeta `json:"recordings"`
	Next       string    `json:"next"`
	NextCursor string    `json:"next_cursor"`
	Cursor     string    `json:"cursor"`
}

var errNoRecordingsAPI = errors.New("no recordings API")

// listRecordings fetches every recording that started at or after since.
func listRecordings(ctx context.Context, base string, since time.Time, user, password string) ([]recMeta, error) {
	var all []recMeta
	cursor := ""
	triedLogin := false
	for range 1000 {
		q := url.Values{"since": {since.UTC().Format(time.RFC3339Nano)}, "limit": {"1000"}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		b, status, err := httpGet(ctx, base+"/api/v1/recordings?"+q.Encode())
		if err != nil {
			return nil, err
		}
		if status == http.StatusUnauthorized && !triedLogin {
			triedLogin = true
			if err := login(ctx, base, user, password); err != nil {
				return nil, fmt.Errorf("the recordings API needs a session and signing in failed: %w", err)
			}
			continue
		}
		if status == http.StatusNotFound || status == http.StatusMethodNotAllowed {
			return nil, fmt.Errorf("%w (GET /api/v1/recordings answered %d)", errNoRecordingsAPI, status)
		}
		if status != http.StatusOK {
			return nil, fmt.Errorf("GET /api/v1/recordings: status %d: %.200s", status, b)
		}
		var p recPage
		if len(bytes.TrimSpace(b)) > 0 && bytes.TrimSpace(b)[0] == '[' {
			err = json.Unmarshal(b, &p.Recordings)
		} else {
			err = json.Unmarshal(b, &p)
		}
		if err != nil {
			return nil, fmt.Errorf("GET /api/v1/recordings: %w", err)
		}
		all = append(all, p.Recordings...)
		next := p.Next + p.NextCursor + p.Cursor
		if next == "" || len(p.Recordings) == 0 {
			return all, nil
		}
		cursor = next
	}
	return all, nil
}

// apiToken is a bearer token for a bridge API that needs a session (bib
// asks supervisors to sign in when any are configured).
var apiToken struct {
	sync.Mutex
	v string
}

// login signs in as a supervisor and keeps the token for httpGet.
func login(ctx context.Context, base, user, password string) error {
	tok, err := loginToken(ctx, http.DefaultClient, base, user, password)
	if err != nil {
		return err
	}
	apiToken.Lock()
	apiToken.v = tok
	apiToken.Unlock()
	return nil
}

// loginToken signs in as a supervisor, POST /api/v1/login
// {"user","password"}, and returns the session's bearer token.
func loginToken(ctx context.Context, cli *http.Client, base, user, password string) (string, error) {
	body, _ := json.Marshal(map[string]string{"user": user, "password": password})
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/v1/login", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := cli.Do(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	var out struct {
		Token string `json:"token"`
	}
	if res.StatusCode != http.StatusOK {
		return "", fmt.Errorf("POST /api/v1/login as %s: status %d", user, res.StatusCode)
	}
	if err := json.NewDecoder(io.LimitReader(res.Body, 1<<16)).Decode(&out); err != nil || out.Token == "" {
		return "", fmt.Errorf("POST /api/v1/login: no token (%v)", err)
	}
	return out.Token, nil
}

func httpGet(ctx context.Context, u string) ([]byte, int, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, 0, err
	}
	apiToken.Lock()
	if apiToken.v != "" {
		req.Header.Set("Authorization", "Bearer "+apiToken.v)
	}
	apiToken.Unlock()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 512<<20))
	return b, res.StatusCode, err
}

// wavPCM is a decoded 16-bit PCM WAV file, channels de-interleaved.
type wavPCM struct {
	Rate     int
	Channels [][]int16
}

var errWAV = errors.New("not a 16-bit PCM WAV file")

// parseWAV reads a RIFF/WAVE file with 16-bit PCM samples.
func parseWAV(b []byte) (wavPCM, error) {
	if len(b) < 12 || string(b[0:4]) != "RIFF" || string(b[8:12]) != "WAVE" {
		return wavPCM{}, errWAV
	}
	var ch, bitsPer, format int
	var w wavPCM
	for p := 12; p+8 <= len(b); {
		id := string(b[p : p+4])
		size := int(binary.LittleEndian.Uint32(b[p+4 : p+8]))
		body := b[p+8:]
		if size > len(body) {
			size = len(body) // a crash-truncated file still plays
		}
		body = body[:size]
		switch id {
		case "fmt ":
			if size < 16 {
				return wavPCM{}, errWAV
			}
			format = int(binary.LittleEndian.Uint16(body[0:2]))
			ch = int(binary.LittleEndian.Uint16(body[2:4]))
			w.Rate = int(binary.LittleEndian.Uint32(body[4:8]))
			bitsPer = int(binary.LittleEndian.Uint16(body[14:16]))
			if format == 0xFFFE && size >= 26 { // WAVE_FORMAT_EXTENSIBLE: subformat GUID's first two bytes
				format = int(binary.LittleEndian.Uint16(body[24:26]))
			}
		case "data":
			if format != 1 || bitsPer != 16 || ch < 1 || ch > 8 || w.Rate <= 0 {
				return wavPCM{}, errWAV
			}
			n := size / (2 * ch)
			w.Channels = make([][]int16, ch)
			for c := range ch {
				w.Channels[c] = make([]int16, n)
			}
			for i := range n {
				for c := range ch {
					o := 2 * (i*ch + c)
					w.Channels[c][i] = int16(binary.LittleEndian.Uint16(body[o : o+2]))
				}
			}
			return w, nil
		}
		p += 8 + size + size&1
	}
	return wavPCM{}, errWAV
}

// fidelity is the comparison of one recorded channel with what a party
// sent.
type fidelity struct {
	offsetErrMS float64 // where the audio is minus where it should be
	coeff       float64 // correlation with the sent audio
	audioRatio  float64 // speech frames sent that are audible in the recording
}

// compareChannel finds sent (at rate, starting nominally at offset
// samples into rec) in rec.
func compareChannel(rec, sent []int16, rate, offset int) fidelity {
	// Coarse alignment on 2 kHz envelopes-free decimation, then refine.
	const dec = 4
	win := min(len(sent), 4*rate) // compare up to 4 s from 1 s in
	skip := min(rate, len(sent)-win)
	a := sent[skip : skip+win]
	search := rate // +-1 s around the nominal position
	lo := offset + skip - search
	shift := 0
	if lo < 0 {
		shift = -lo
		lo = 0
	}
	hi := min(len(rec), offset+skip+win+search)
	if hi-lo < win/2 {
		return fidelity{}
	}
	b := rec[lo:hi]
	lagD, _ := codec.Correlate(decimate(a, dec), decimate(b, dec), 2*search/dec)
	lag := lagD * dec
	// Refine at full rate around the coarse lag. The lag may be negative
	// (the sender started before the recording: a recorder's fork starts
	// after the call's first packets); the fine search then reaches back
	// from the start of b.
	rlo := max(0, lag-2*dec)
	rhi := min(len(b), lag+len(a)+2*dec)
	if rhi-rlo < len(a)/2 {
		return fidelity{}
	}
	fine, coeff := codec.Correlate(a, b[rlo:rhi], abs(lag-rlo)+2*dec)
	lag = rlo + fine
	// lag is a's position in b; nominal position is search - shift.
	errSamples := lag - (search - shift)
	f := fidelity{offsetErrMS: 1000 * float64(errSamples) / float64(rate), coeff: coeff}
	// Audibility, frame by frame over the whole call, at the found offset.
	pos := offset + errSamples
	frame := rate / 50
	var speech, heard int
	for i := 0; i+frame <= len(sent); i += frame {
		if codec.IsSilent(sent[i:i+frame], -45) {
			continue
		}
		speech++
		j := pos + i
		if j >= 0 && j+frame <= len(rec) && !codec.IsSilent(rec[j:j+frame], -55) {
			heard++
		}
	}
	if speech > 0 {
		f.audioRatio = float64(heard) / float64(speech)
	}
	return f
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

func decimate(x []int16, k int) []int16 {
	out := make([]int16, len(x)/k)
	for i := range out {
		var s int32
		for j := range k {
			s += int32(x[i*k+j])
		}
		out[i] = int16(s / int32(k))
	}
	return out
}

// checkRecordings finds a recording for each call and compares a sample
// of them with what the parties sent.
func checkRecordings(ctx context.Context, base string, calls []callRecord, agentP, custP *prompt.Prompt, sample int, user, password string) (RecordingReport, []string) {
	var rep RecordingReport
	var notes []string
	if len(calls) == 0 {
		return rep, notes
	}
	since := calls[0].Answered
	for _, c := range calls {
		if c.Answered.Before(since) {
			since = c.Answered
		}
	}
	since = since.Add(-5 * time.Second)
	// Recordings are finalised after the calls end: poll until every call
	// has one or nothing new appears for a while.
	var metas []recMeta
	matched := map[int]recMeta{}
	stall := time.Now()
	for {
		m, err := listRecordings(ctx, base, since, user, password)
		if err != nil {
			notes = append(notes, fmt.Sprintf("Recordings not available: %v.", err))
			return rep, notes
		}
		rep.Available = true
		if len(m) > len(metas) {
			stall = time.Now()
		}
		metas = m
		matched = matchRecordings(calls, metas)
		complete := 0
		for _, rm := range matched {
			if rm.Status == "complete" {
				complete++
			}
		}
		if complete == len(calls) || time.Since(stall) > 5*time.Second || ctx.Err() != nil {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	rep.Found = uint64(len(matched))
	rep.MinCorrelation = 1
	rep.MinAudioRatio = 1
	for i, c := range calls {
		rm, ok := matched[i]
		if !ok {
			continue
		}
		sentMS := int64(max(c.AgentFrames, c.CustFrames)) * prompt.FrameMS
		if rm.Status == "complete" && rm.DurationMS+100 >= sentMS {
			rep.Complete++
		}
		if int(rep.Sampled) >= sample {
			continue
		}
		b, status, err := httpGet(ctx, base+"/api/v1/recordings/"+url.PathEscape(rm.ID)+"/audio")
		if err != nil || status != http.StatusOK {
			notes = append(notes, fmt.Sprintf("Recording %s: audio not downloadable (status %d, %v).", rm.ID, status, err))
			continue
		}
		w, err := parseWAV(b)
		if err != nil || len(w.Channels) < 2 {
			notes = append(notes, fmt.Sprintf("Recording %s: %v (channels %d); fidelity not measured.", rm.ID, err, len(w.Channels)))
			continue
		}
		rep.Sampled++
		want := func(p *prompt.Prompt, first, n int) []int16 {
			x := p.Expected(nil, first, n)
			if p.Codec.SampleRate != w.Rate {
				x = codec.Resample(nil, x, p.Codec.SampleRate, w.Rate)
			}
			return x
		}
		agent := want(agentP, c.AgentFirst, c.AgentFrames)
		cust := want(custP, c.CustFirst, c.CustFrames)
		offA := int(c.AgentStart.Sub(rm.StartTime).Seconds() * float64(w.Rate))
		offC := int(c.CustStart.Sub(rm.StartTime).Seconds() * float64(w.Rate))
		near := compareChannel(w.Channels[0], agent, w.Rate, offA)
		far := compareChannel(w.Channels[1], cust, w.Rate, offC)
		if swapped := compareChannel(w.Channels[1], agent, w.Rate, offA); swapped.coeff > near.coeff+0.2 {
			notes = append(notes, fmt.Sprintf("Recording %s: the agent's voice is on channel 2, expected channel 1 (near end).", rm.ID))
		}
		rep.MaxSkewMS = max(rep.MaxSkewMS, round3(math.Abs(near.offsetErrMS-far.offsetErrMS)))
		rep.MinCorrelation = min(rep.MinCorrelation, round3(near.coeff), round3(far.coeff))
		rep.MinAudioRatio = min(rep.MinAudioRatio, round3(near.audioRatio), round3(far.audioRatio))
	}
	if rep.Sampled == 0 {
		rep.MinCorrelation, rep.MinAudioRatio = 0, 0
	}
	return rep, notes
}

// matchRecordings pairs calls (by index) with recordings: same agent line
// (near end), starting between the answer and the hang-up.
func matchRecordings(calls []callRecord, metas []recMeta) map[int]recMeta {
	byLine := map[string][]recMeta{}
	for _, m := range metas {
		l := m.Near.Line
		if l == "" {
			l = m.Near.Addr
		}
		byLine[l] = append(byLine[l], m)
	}
	out := map[int]recMeta{}
	used := map[string]bool{}
	for i, c := range calls {
		for _, m := range byLine[c.Line] {
			if used[m.ID] {
				continue
			}
			if m.StartTime.Before(c.Answered.Add(-2*time.Second)) || m.StartTime.After(c.Ended) {
				continue
			}
			out[i] = m
			used[m.ID] = true
			break
		}
	}
	return out
}
