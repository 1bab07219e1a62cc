package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/bib-project/bib/bridge"
	"github.com/bib-project/bib/recorder"
	"github.com/bib-project/bib/sip"
	"github.com/bib-project/bib/storage"
	sipmsg "github.com/emiago/sipgo/sip"
)

// recorderMain runs `bib recorder`: a recording server that accepts
// call-manager-style fork pairs and SIPREC sessions and archives each as
// one stereo recording (near end left, far end right).
func recorderMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("recorder", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sipAddr := fs.String("sip", "127.0.0.1:5080", "SIP listen address IP:PORT (UDP and TCP)")
	data := fs.String("data", "./recorder-data", "archive directory")
	httpAddr := fs.String("http", "", "serve the recordings API on IP:PORT (default: off)")
	ports := fs.String("rtp-ports", "40000-49999", "RTP port range MIN-MAX for received streams")
	level := fs.String("log-level", "info", "debug|info|warn|error")
	useSRTP := fs.Bool("srtp", false, "take SRTP (SDES) streams: accept RTP/SAVP offers, offer RTP/SAVP in delayed offer")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	lvl, err := parseLevel(*level)
	if err != nil {
		fmt.Fprintln(stderr, "bib recorder:", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	sipmsg.SetDefaultLogger(log.With("component", "sipgo"))
	rs, err := newRecorderService(recorderOptions{SIP: *sipAddr, Data: *data, HTTP: *httpAddr, RTPPorts: *ports, SRTP: *useSRTP}, log)
	if err != nil {
		fmt.Fprintln(stderr, "bib recorder:", err)
		return 2
	}
	if err := rs.listen(ctx); err != nil {
		fmt.Fprintln(stderr, "bib recorder:", err)
		return 1
	}
	fmt.Fprintf(stdout, "bib recorder ready: sip %s (udp+tcp), data %s%s\n", rs.srv.Addr("udp"), *data, rs.httpNote())
	if err := rs.serve(ctx); err != nil {
		log.Error("bib recorder stopped", "err", err)
		return 1
	}
	return 0
}

type recorderOptions struct {
	SIP, Data, HTTP, RTPPorts string
	SRTP                      bool            // take SRTP streams (sip.RecorderConfig.SRTP)
	Recording                 recorder.Config // zero: recorder.Defaults()
}

// recorderService is a running `bib recorder`.
type recorderService struct {
	opts    recorderOptions
	log     *slog.Logger
	store   *storage.DirStore
	srv     *sip.RecorderServer
	metrics recorder.Metrics
	http    *http.Server
	httpLn  net.Listener
}

func newRecorderService(o recorderOptions, log *slog.Logger) (*recorderService, error) {
	if o.Recording == (recorder.Config{}) {
		o.Recording = recorder.Defaults()
	}
	if err := o.Recording.Validate(); err != nil {
		return nil, err
	}
	rs := &recorderService{opts: o, log: log}
	srv, err := sip.NewRecorderServer(sip.RecorderConfig{Listen: o.SIP, RTPPorts: o.RTPPorts, SRTP: o.SRTP}, rs.newSink, log)
	if err != nil {
		return nil, err
	}
	rs.srv = srv
	return rs, nil
}

func (rs *recorderService) listen(ctx context.Context) error {
	if err := os.MkdirAll(rs.opts.Data, 0o750); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	st, err := storage.OpenDir(rs.opts.Data, storage.WithLogger(rs.log))
	if err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	rs.store = st
	if fixed, err := recorder.Repair(ctx, st); err != nil {
		rs.log.Error("repairing unfinished recordings", "err", err)
	} else {
		for _, m := range fixed {
			rs.log.Warn("recording left unfinished by a crash was repaired", "recording_id", m.ID, "status", m.Status)
		}
	}
	if err := rs.srv.Listen(ctx); err != nil {
		st.Close()
		return err
	}
	if rs.opts.HTTP != "" {
		ln, err := net.Listen("tcp", rs.opts.HTTP)
		if err != nil {
			rs.srv.Close()
			st.Close()
			return fmt.Errorf("http listen: %w", err)
		}
		mux := http.NewServeMux()
		registerRecordingRoutes(mux, st, nil, rs.log)
		rs.httpLn, rs.http = ln, &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	}
	return nil
}

func (rs *recorderService) httpNote() string {
	if rs.httpLn == nil {
		return ""
	}
	return ", http http://" + rs.httpLn.Addr().String()
}

// serve runs until ctx ends, then finalizes every open recording.
func (rs *recorderService) serve(ctx context.Context) error {
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	sctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wg.Add(1)
	go func() { defer wg.Done(); errc <- rs.srv.Serve(sctx) }()
	if rs.http != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := rs.http.Serve(rs.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	if rs.http != nil {
		hctx, hcancel := context.WithTimeout(context.Background(), 2*time.Second)
		rs.http.Shutdown(hctx)
		hcancel()
	}
	rs.srv.Close()
	cancel()
	wg.Wait()
	if cerr := rs.store.Close(); cerr != nil {
		rs.log.Error("closing archive", "err", cerr)
	}
	return err
}

// recSink is one recording of `bib recorder`: the local recorder plus the
// identification the client sent, kept verbatim next to the archive.
type recSink struct {
	*recorder.Recorder
	rs   *recorderService
	sess *sip.RecordedSession
}

func (rs *recorderService) newSink(sess *sip.RecordedSession) (sip.RecordingSink, error) {
	callID := sess.RefCI
	if ids := sess.CallIDs(); callID == "" && len(ids) > 0 {
		callID = ids[0]
	}
	info := recorder.CallInfo{
		CallID: callID, RefCI: sess.RefCI, FarRefCI: sess.FarRefCI,
		NearDevice: sess.Near.Device, NearAddr: sess.Near.Addr, NearName: sess.Near.Name,
		FarDevice: sess.Far.Device, FarAddr: sess.Far.Addr, FarName: sess.Far.Name,
	}
	rec, err := recorder.New(rs.opts.Recording, info, rs.store, rs.log.With("protocol", sess.Protocol),
		recorder.WithNearSide(bridge.SideA), recorder.WithClock(sess.Now), recorder.WithMetrics(&rs.metrics))
	if err != nil {
		return nil, err
	}
	return &recSink{Recorder: rec, rs: rs, sess: sess}, nil
}

// identification is the sidecar <data>/identification/<recording id>.json.
type identification struct {
	RecordingID    string            `json:"recording_id"`
	Protocol       string            `json:"protocol"`
	SIPCallIDs     []string          `json:"sip_call_ids"`
	RefCI          string            `json:"refci,omitempty"`
	FarRefCI       string            `json:"far_refci,omitempty"`
	Near           sip.RecordedParty `json:"near"`
	Far            sip.RecordedParty `json:"far"`
	Identification []string          `json:"identification"` // From headers (cucm) or metadata XML (siprec), verbatim
	Notes          []string          `json:"notes,omitempty"`
}

func (s *recSink) Close() error {
	err := s.Recorder.Close()
	id := identification{RecordingID: s.ID(), Protocol: s.sess.Protocol, SIPCallIDs: s.sess.CallIDs(),
		RefCI: s.sess.RefCI, FarRefCI: s.sess.FarRefCI, Near: s.sess.Near, Far: s.sess.Far,
		Identification: s.sess.Identification(), Notes: s.sess.Notes()}
	if werr := writeIdentification(s.rs.opts.Data, id); werr != nil {
		s.rs.log.Error("identification sidecar not written", "recording_id", s.ID(), "err", werr)
		err = errors.Join(err, werr)
	}
	return err
}

func identificationPath(data, id string) string {
	return filepath.Join(data, "identification", id+".json")
}

func writeIdentification(data string, id identification) error {
	p := identificationPath(data, id.RecordingID)
	if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
		return err
	}
	b, err := json.MarshalIndent(id, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(p, append(b, '\n'), 0o640)
}
