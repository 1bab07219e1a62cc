package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/bib-project/bib/bridge"
	"github.com/bib-project/bib/cmd/internal/load"
	"github.com/bib-project/bib/sip"
)

// DemoConfig is `demo:` in the config (or `bib serve --demo`): simulated
// Jabber devices place looping calls through bib so a newcomer sees it work.
type DemoConfig struct {
	// Enabled turns the demo on (flag --demo). Default false.
	Enabled bool `yaml:"enabled"`
	// CallDuration is how long each simulated call lasts before it hangs up
	// and a new one starts (duration). Default 30s.
	CallDuration bridge.Duration `yaml:"call_duration"`
}

// Defaults fills unset fields.
func (c *DemoConfig) Defaults() {
	if c.CallDuration == 0 {
		c.CallDuration = bridge.Duration(30 * time.Second)
	}
}

// Validate checks the fields.
func (c DemoConfig) Validate() error {
	if time.Duration(c.CallDuration) < time.Second {
		return fmt.Errorf("demo.call_duration: %s is shorter than 1s", time.Duration(c.CallDuration))
	}
	return nil
}

// The demo's cast: two agents on Jabber devices (a desktop CSF and an
// Android BOT), a customer number range, and a supervisor.
const (
	demoSupervisor = "supervisor"
	demoPassword   = "demo"
	demoFirstLine  = 1001
)

var demoDevices = []string{"CSFJDOE", "BOTASMITH"}

// demoSetup is what applyDemo added, for printing and for the call driver.
type demoSetup struct {
	customer string // the simulated customers' SIP address
	added    Config // only the demo's additions, printed for copying
}

// applyDemo adds the demo's cluster settings, devices, customer route and
// supervisor to cfg. The gate applies to the demo devices as to real ones.
func applyDemo(cfg *Config) (*demoSetup, error) {
	// The customers' user agent needs a port before the routes are built.
	ln, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(cfg.Media.IP)})
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	customer := ln.LocalAddr().String()
	ln.Close()

	var add Config
	add.Cluster = cfg.Cluster
	add.Cluster.BuiltinBridgeEnable = true
	for i, name := range demoDevices {
		add.Devices = append(add.Devices, bridge.Device{
			Name: name, Line: fmt.Sprint(demoFirstLine + i), BuiltinBridge: "default",
			Recording: "automatic", Monitoring: true,
		})
	}
	add.Routes = []sip.Route{{Match: "regex:^2[0-9]+$", Target: "sip:${user}@" + customer}}
	add.Supervisors = []bridge.Supervisor{{User: demoSupervisor, Password: demoPassword, Monitors: []string{"*"}}}

	cfg.Cluster = add.Cluster
	cfg.Devices = append(cfg.Devices, add.Devices...)
	cfg.Routes = append(cfg.Routes, add.Routes...)
	cfg.Supervisors = append(cfg.Supervisors, add.Supervisors...)
	return &demoSetup{customer: customer, added: add}, nil
}

// yaml renders the demo's additions as config the user can copy.
func (d *demoSetup) yaml() string {
	var b strings.Builder
	fmt.Fprintf(&b, "cluster: {release: %q, builtin_bridge_enable: true}\n", d.added.Cluster.Release)
	b.WriteString("devices:\n")
	for _, dv := range d.added.Devices {
		fmt.Fprintf(&b, "  - {name: %s, line: %q, builtin_bridge: %s, recording: %s, monitoring: %t}\n",
			dv.Name, dv.Line, dv.BuiltinBridge, dv.Recording, dv.Monitoring)
	}
	b.WriteString("routes:\n")
	for _, r := range d.added.Routes {
		fmt.Fprintf(&b, "  - {match: %q, target: %q}\n", r.Match, r.Target)
	}
	b.WriteString("supervisors:\n")
	for _, sv := range d.added.Supervisors {
		fmt.Fprintf(&b, "  - {user: %s, password: %s, monitors: [%q]}\n", sv.User, sv.Password, strings.Join(sv.Monitors, ","))
	}
	return b.String()
}

// runDemo drives the simulated calls until ctx ends: each agent calls a
// customer, both speak the MP3 prompts, the call hangs up after
// call_duration and the next one starts.
func (s *server) runDemo(ctx context.Context, d *demoSetup, stdout io.Writer) {
	target := s.sip.Addr("udp")
	hold := time.Duration(s.cfg.Demo.CallDuration)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Tell the user once both calls are up.
		for ctx.Err() == nil {
			n := 0
			for _, ci := range s.sip.Calls() {
				if ci.State == sip.StateAnswered {
					n++
				}
			}
			if n >= len(demoDevices) {
				fmt.Fprintf(stdout, "\nbib demo: %d calls up, recording to %s, open http://%s and press Listen\n"+
					"          (sign in as %q, password %q). SIP: %s. Stop with Ctrl-C.\n\n",
					n, s.cfg.Data, s.httpLn.Addr(), demoSupervisor, demoPassword, target)
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	for ctx.Err() == nil {
		cfg := load.Config{
			Target:         target.String(),
			Calls:          len(demoDevices),
			Rate:           2,
			Duration:       10 * time.Minute,
			Hold:           hold,
			Register:       true,
			FirstLine:      demoFirstLine,
			AgentDevices:   demoDevices,
			CustomerListen: d.customer,
			Codec:          "pcmu",
		}
		if _, err := load.Run(ctx, cfg, nil); err != nil && ctx.Err() == nil {
			s.log.Warn("demo calls stopped; retrying", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(2 * time.Second):
			}
		}
	}
}

// demoBanner is printed before serving so users can copy the demo config.
func demoBanner(d *demoSetup) string {
	var b strings.Builder
	b.WriteString("bib serve --demo: simulated Jabber agents (CSF desktop, BOT Android) call a simulated customer,\n")
	b.WriteString("speaking the MP3 prompts; calls are recorded and can be monitored. The demo adds this config:\n\n")
	for _, l := range strings.Split(strings.TrimRight(d.yaml(), "\n"), "\n") {
		b.WriteString("    " + l + "\n")
	}
	return b.String()
}
