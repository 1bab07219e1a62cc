package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"testing"
	"time"

	"github.com/bib-project/bib/recorder"
	"github.com/bib-project/bib/sip/siptest"
)

// finishedRecordingChannels waits until the newest recording is finalized,
// reads it through the API (signed in with tok when not empty) and returns
// its id and its two channels.
func finishedRecordingChannels(t *testing.T, ctx context.Context, ts *testServer, tok string) (id string, left, right []int16) {
	t.Helper()
	var rec struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}
	for rec.Status == "" || rec.Status == "recording" {
		resp, b := do(t, "GET", ts.httpURL+"/api/v1/recordings", tok, "", "")
		var list struct {
			Recordings []json.RawMessage `json:"recordings"`
		}
		if resp.StatusCode == 200 && json.Unmarshal(b, &list) == nil && len(list.Recordings) > 0 {
			json.Unmarshal(list.Recordings[0], &rec)
		}
		if rec.Status == "" || rec.Status == "recording" {
			select {
			case <-ctx.Done():
				t.Fatal("no finished recording")
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	resp, wav := do(t, "GET", ts.httpURL+"/api/v1/recordings/"+rec.ID+"/audio", tok, "", "")
	if resp.StatusCode != 200 {
		t.Fatalf("recording audio: %d", resp.StatusCode)
	}
	info, err := recorder.ParseWAVHeader(bytes.NewReader(wav))
	if err != nil {
		t.Fatal(err)
	}
	pcm := wav[info.DataOffset:]
	left, right = make([]int16, len(pcm)/4), make([]int16, len(pcm)/4)
	for i := range left {
		left[i] = int16(binary.LittleEndian.Uint16(pcm[4*i:]))
		right[i] = int16(binary.LittleEndian.Uint16(pcm[4*i+2:]))
	}
	return rec.ID, left, right
}

// expectEachOther checks that each party received exactly, and only, the
// datagrams the other one sent: the relay passed them byte for byte and
// nothing else (no supervisor audio, no tone) reached the call.
func expectEachOther(t *testing.T, ctx context.Context, agent, customer *siptest.Party, sentByAgent, sentByCustomer [][]byte) {
	t.Helper()
	for _, x := range []struct {
		p    *siptest.Party
		want [][]byte
	}{{agent, sentByCustomer}, {customer, sentByAgent}} {
		rs, err := x.p.WaitPackets(ctx, len(x.want))
		if err != nil {
			t.Fatalf("%s: %v", x.p.User, err)
		}
		if len(rs) != len(x.want) {
			t.Fatalf("%s received %d datagrams, the other party sent %d", x.p.User, len(rs), len(x.want))
		}
		for i := range rs {
			if !bytes.Equal(rs[i].Data, x.want[i]) {
				t.Fatalf("%s: datagram %d is not what the other party sent", x.p.User, i)
			}
		}
	}
}
