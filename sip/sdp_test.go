package sip

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/bib-project/bib/bridge"
	sipmsg "github.com/emiago/sipgo/sip"
)

const offerA = "v=0\r\n" +
	"o=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\n" +
	"s=call\r\n" +
	"c=IN IP4 192.0.2.10\r\n" +
	"t=0 0\r\n" +
	"m=audio 49170 RTP/AVP 9 0 8 101 13\r\n" +
	"a=rtpmap:9 G722/8000\r\n" +
	"a=rtpmap:0 PCMU/8000\r\n" +
	"a=rtpmap:8 PCMA/8000\r\n" +
	"a=rtpmap:101 telephone-event/8000\r\n" +
	"a=fmtp:101 0-15\r\n" +
	"a=rtpmap:13 CN/8000\r\n" +
	"a=ptime:20\r\n" +
	"a=sendrecv\r\n" +
	"m=video 51372 RTP/AVP 96\r\n" +
	"a=rtpmap:96 H264/90000\r\n"

func TestParseMedia(t *testing.T) {
	tests := []struct {
		name string
		sdp  string
		want bridge.MediaDesc
		err  error
	}{
		{
			name: "full offer",
			sdp:  offerA,
			want: bridge.MediaDesc{
				RTP:  netip.MustParseAddrPort("192.0.2.10:49170"),
				RTCP: netip.MustParseAddrPort("192.0.2.10:49171"),
				Mode: bridge.SendRecv, Ptime: 20,
				Codecs: []bridge.Codec{
					{PT: 9, Name: "G722", Rate: 8000, Channels: 1},
					{PT: 0, Name: "PCMU", Rate: 8000, Channels: 1},
					{PT: 8, Name: "PCMA", Rate: 8000, Channels: 1},
					{PT: 101, Name: "telephone-event", Rate: 8000, Channels: 1, Fmtp: "0-15"},
					{PT: 13, Name: "CN", Rate: 8000, Channels: 1},
				},
			},
		},
		{
			name: "static payload types, media-level c, rtcp attr, sendonly at session level",
			sdp: "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nt=0 0\r\na=sendonly\r\n" +
				"m=audio 4000 RTP/AVP 0 8\r\nc=IN IP4 10.0.0.2\r\na=rtcp:4005 IN IP4 10.0.0.3\r\n",
			want: bridge.MediaDesc{
				RTP: netip.MustParseAddrPort("10.0.0.2:4000"), RTCP: netip.MustParseAddrPort("10.0.0.3:4005"),
				Mode:   bridge.SendOnly,
				Codecs: []bridge.Codec{{PT: 0, Name: "PCMU", Rate: 8000, Channels: 1}, {PT: 8, Name: "PCMA", Rate: 8000, Channels: 1}},
			},
		},
		{
			name: "rtcp-mux and inactive",
			sdp:  "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\na=rtcp-mux\r\na=inactive\r\n",
			want: bridge.MediaDesc{
				RTP: netip.MustParseAddrPort("10.0.0.1:5000"), RTCPMux: true, Mode: bridge.Inactive,
				Codecs: []bridge.Codec{{PT: 0, Name: "PCMU", Rate: 8000, Channels: 1}},
			},
		},
		{name: "srtp", sdp: strings.Replace(offerA, "49170 RTP/AVP", "49170 RTP/SAVP", 1), err: ErrMediaTransport},
		{name: "tcp media", sdp: strings.Replace(offerA, "49170 RTP/AVP", "49170 TCP/RTP/AVP", 1), err: ErrMediaTransport},
		{name: "no audio", sdp: "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=video 5000 RTP/AVP 96\r\n", err: ErrNoAudio},
		{name: "hostname address", sdp: strings.ReplaceAll(offerA, "IN IP4 192.0.2.10", "IN IP4 host.example"), err: ErrMediaAddress},
		{name: "no c line", sdp: "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n", err: ErrMalformedSDP},
		{name: "bad payload type", sdp: strings.Replace(offerA, "RTP/AVP 9 0", "RTP/AVP 9 x", 1), err: ErrMalformedSDP},
		{name: "garbage", sdp: "hello", err: ErrMalformedSDP},
		{name: "empty", sdp: "", err: ErrMalformedSDP},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseMedia([]byte(tc.sdp))
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.RTP != tc.want.RTP || got.RTCP != tc.want.RTCP || got.RTCPMux != tc.want.RTCPMux ||
				got.Mode != tc.want.Mode || got.Ptime != tc.want.Ptime || len(got.Codecs) != len(tc.want.Codecs) {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
			for i := range got.Codecs {
				if got.Codecs[i] != tc.want.Codecs[i] {
					t.Fatalf("codec %d: %+v, want %+v", i, got.Codecs[i], tc.want.Codecs[i])
				}
			}
		})
	}
}

func TestRewrite(t *testing.T) {
	local := netip.MustParseAddrPort("127.0.0.1:20000")
	rtcp := netip.MustParseAddrPort("127.0.0.1:20001")
	out, err := Rewrite([]byte(offerA), Origin{SessionID: 77, Version: 3}, local, rtcp)
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	for _, want := range []string{
		"o=bib 77 3 IN IP4 127.0.0.1\r\n",
		"c=IN IP4 127.0.0.1\r\n",
		"m=audio 20000 RTP/AVP 9 0 8 101 13\r\n",
		"a=fmtp:101 0-15\r\n", "a=rtpmap:13 CN/8000\r\n", "a=ptime:20\r\n", "a=sendrecv\r\n",
		"m=video 0 RTP/AVP 96\r\n", // extra m-line rejected (RFC 3264 section 6)
	} {
		if !strings.Contains(s, want) {
			t.Errorf("missing %q in\n%s", want, s)
		}
	}
	if strings.Contains(s, "192.0.2.10") || strings.Contains(s, "alice") {
		t.Errorf("peer address or origin leaked:\n%s", s)
	}
	d, err := ParseMedia(out)
	if err != nil || d.RTP != local {
		t.Fatalf("rewritten sdp parses to %+v, %v", d, err)
	}

	t.Run("a=rtcp and mux", func(t *testing.T) {
		in := "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\na=rtcp:5001\r\n"
		out, err := Rewrite([]byte(in), Origin{1, 1}, local, rtcp)
		if err != nil || !strings.Contains(string(out), "a=rtcp:20001 IN IP4 127.0.0.1\r\n") {
			t.Fatalf("%s %v", out, err)
		}
		in = strings.Replace(in, "a=rtcp:5001", "a=rtcp:5000\r\na=rtcp-mux", 1)
		out, err = Rewrite([]byte(in), Origin{1, 1}, local, rtcp)
		if err != nil || !strings.Contains(string(out), "a=rtcp:20000 IN IP4 127.0.0.1\r\n") || !strings.Contains(string(out), "a=rtcp-mux") {
			t.Fatalf("%s %v", out, err)
		}
	})
	t.Run("legacy hold address kept", func(t *testing.T) {
		in := strings.ReplaceAll(offerA, "c=IN IP4 192.0.2.10", "c=IN IP4 0.0.0.0")
		out, err := Rewrite([]byte(in), Origin{1, 1}, local, rtcp)
		if err != nil || !strings.Contains(string(out), "c=IN IP4 0.0.0.0\r\n") {
			t.Fatalf("%s %v", out, err)
		}
		d, _ := ParseMedia(out)
		if !d.Hold() {
			t.Fatal("hold lost")
		}
	})
	t.Run("rejects what ParseMedia rejects", func(t *testing.T) {
		if _, err := Rewrite([]byte(strings.Replace(offerA, "RTP/AVP 9", "RTP/SAVP 9", 1)), Origin{}, local, rtcp); !errors.Is(err, ErrMediaTransport) { // no a=crypto
			t.Fatal(err)
		}
	})
}

func TestSDPStatusWarning(t *testing.T) {
	_, err := ParseMedia([]byte(strings.Replace(offerA, "RTP/AVP 9", "RTP/SAVP 9", 1)))
	se := sdpStatus(err)
	if se.Code != 488 || !strings.HasPrefix(se.Warning, `302 bib "RTP/SAVP audio without an a=crypto suite bib supports`) {
		t.Fatalf("%+v", se)
	}
	_, err = ParseMedia([]byte(strings.Replace(offerA, "RTP/AVP 9", "UDP/TLS/RTP/SAVPF 9", 1)))
	if se := sdpStatus(err); se.Code != 488 || !strings.HasPrefix(se.Warning, `302 bib "audio transport UDP/TLS/RTP/SAVPF not supported`) {
		t.Fatalf("%+v", se)
	}
}

// SDES: the first a=crypto line with a supported suite is the party's
// key; Rewrite forwards that line alone, unchanged (pass-through keys);
// malformed or unsupported crypto is a clear 488.
func TestSDPCrypto(t *testing.T) {
	k1, _ := bridge.NewSRTPKey(bridge.SuiteAES128SHA1_80)
	k2, _ := bridge.NewSRTPKey(bridge.SuiteAES128SHA1_32)
	secure := strings.Replace(offerA, "RTP/AVP 9", "RTP/SAVP 9", 1)
	secure = strings.Replace(secure, "a=sendrecv\r\n", "a=sendrecv\r\n"+
		"a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:AAAA\r\n"+
		"a=crypto:2 "+k1.Suite+" "+k1.Inline()+"|2^31\r\n"+
		"a=crypto:3 "+k2.Suite+" "+k2.Inline()+"\r\n", 1)
	d, err := ParseMedia([]byte(secure))
	if err != nil || d.SRTP == nil || !d.SRTP.Equal(k1) {
		t.Fatalf("key %v, %v", d.SRTP, err)
	}
	out, err := Rewrite([]byte(secure), Origin{1, 1}, netip.MustParseAddrPort("127.0.0.1:20000"), netip.MustParseAddrPort("127.0.0.1:20001"))
	if err != nil {
		t.Fatal(err)
	}
	if s := string(out); strings.Count(s, "a=crypto:") != 1 || !strings.Contains(s, "a=crypto:2 "+k1.Suite+" "+k1.Inline()+"|2^31\r\n") || !strings.Contains(s, "RTP/SAVP") {
		t.Fatalf("rewritten:\n%s", s)
	}
	if tag, sec, err := OfferCrypto([]byte(secure)); tag != "2" || !sec || err != nil {
		t.Fatalf("OfferCrypto %q %v %v", tag, sec, err)
	}
	for _, bad := range []string{
		"a=crypto:1 " + k1.Suite + " inline:not-base64!!\r\n",
		"a=crypto:1 " + k1.Suite + " " + k1.Inline() + "|2^20|1:4\r\n",
		"a=crypto:1 " + k1.Suite + " " + k1.Inline() + " UNENCRYPTED_SRTP\r\n",
	} {
		body := strings.Replace(strings.Replace(offerA, "RTP/AVP 9", "RTP/SAVP 9", 1), "a=sendrecv\r\n", "a=sendrecv\r\n"+bad, 1)
		if _, err := ParseMedia([]byte(body)); err == nil || sdpStatus(err).Code != 488 {
			t.Errorf("%q: %v", bad, err)
		}
	}
	// A plain stream's a=crypto is ignored.
	plain := strings.Replace(offerA, "a=sendrecv\r\n", "a=sendrecv\r\na=crypto:1 "+k1.Suite+" "+k1.Inline()+"\r\n", 1)
	if d, err := ParseMedia([]byte(plain)); err != nil || d.SRTP != nil {
		t.Fatalf("plain with crypto: %v %v", d.SRTP, err)
	}
}

func FuzzParseMedia(f *testing.F) {
	f.Add([]byte(offerA))
	f.Add([]byte("v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\na=rtcp-mux\r\na=rtcp:70000\r\n"))
	f.Add([]byte("v=0\r\nm=audio 0 RTP/AVP\r\n"))
	f.Add([]byte("v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 5000 RTP/SAVP 0\r\n" +
		"a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|2^20\r\n" +
		"a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := ParseMedia(b)
		if err != nil {
			return
		}
		if !d.RTP.IsValid() {
			t.Fatalf("accepted sdp without an address: %q", b)
		}
		// Whatever parses must also rewrite, and the result must describe
		// bib's address with the same codecs.
		local := netip.MustParseAddrPort("127.0.0.1:20000")
		out, err := Rewrite(b, Origin{1, 2}, local, netip.MustParseAddrPort("127.0.0.1:20001"))
		if err != nil {
			t.Fatalf("parsed but rewrite failed: %v\n%q", err, b)
		}
		d2, err := ParseMedia(out)
		if err != nil {
			t.Fatalf("rewritten sdp does not parse: %v\n%q", err, out)
		}
		if len(d2.Codecs) != len(d.Codecs) || d2.Mode != d.Mode {
			t.Fatalf("rewrite changed media: %+v -> %+v", d, d2)
		}
		// The party's SRTP key passes through the rewrite unchanged.
		if (d.SRTP == nil) != (d2.SRTP == nil) || d.SRTP != nil && !d.SRTP.Equal(*d2.SRTP) {
			t.Fatalf("rewrite changed the srtp key: %v -> %v\n%q", d.SRTP, d2.SRTP, out)
		}
	})
}

func FuzzRewrite(f *testing.F) {
	f.Add([]byte(offerA), uint16(20000))
	f.Add([]byte("v=0\r\no=- 1 1 IN IP6 ::1\r\ns=-\r\nc=IN IP6 ::1\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"), uint16(1))
	f.Fuzz(func(t *testing.T, b []byte, port uint16) {
		local := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)
		out, err := Rewrite(b, Origin{SessionID: 9, Version: 9}, local, local)
		if err != nil {
			return
		}
		if len(out) > 2*len(b)+512 {
			t.Fatalf("rewrite grew %d -> %d bytes", len(b), len(out))
		}
		if !strings.Contains(string(out), "o=bib 9 9 IN IP4 127.0.0.1") {
			t.Fatalf("origin not ours:\n%s", out)
		}
	})
}

func FuzzBadRequest(f *testing.F) {
	f.Add([]byte("OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCSeq: x\r\n\r\n"))
	f.Add([]byte("\x00garbage"))
	f.Fuzz(func(t *testing.T, b []byte) {
		res := badRequest(b, "bib", "malformed: \"x\"\r\n")
		if res == nil {
			return
		}
		// One message: a 400 status line, header lines without control
		// characters, the Warning, one blank line at the very end.
		s := string(res)
		if !strings.HasPrefix(s, "SIP/2.0 400 Bad Request\r\n") || strings.Index(s, "\r\n\r\n") != len(s)-4 {
			t.Fatalf("not one 400 message: %q", s)
		}
		for _, line := range strings.Split(strings.TrimSuffix(s, "\r\n\r\n"), "\r\n") {
			if strings.ContainsFunc(line, func(r rune) bool { return r < 0x20 && r != '\t' }) {
				t.Fatalf("control character in %q", line)
			}
		}
		if !strings.Contains(s, "\r\nWarning: 399 bib \"malformed: 'x'  \"\r\n") {
			t.Fatalf("warning missing or unquoted: %q", s)
		}
		if _, err := sipmsg.ParseMessage([]byte("SIP/2.0 400 Bad Request\r\nWarning: 399 bib \"malformed: 'x'  \"\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
	})
}
