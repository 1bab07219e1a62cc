package load

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"strings"
)

// WriteHTML writes one self-contained page (inline SVG, inline CSS, no
// script, no network) with the run's charts and summary table.
func (r *Report) WriteHTML(w io.Writer) error {
	var t, active, loss, p99, cpu, rss, rcpu []float64
	for _, s := range r.Series {
		t = append(t, s.T)
		active = append(active, float64(s.Active))
		loss = append(loss, 100*s.LossRatio)
		p99 = append(p99, s.P99MS)
		cpu = append(cpu, s.BridgeCPUPct)
		rss = append(rss, float64(s.BridgeRSS)/(1<<20))
		rcpu = append(rcpu, s.RecorderCPUPct)
	}
	charts := []template.HTML{
		lineChart("Concurrent calls", "calls", t, active),
		lineChart("RTP sent but not received within the same second (in flight or lost; the run's loss is in the table)", "%", t, loss),
		lineChart("RTP latency p99 per second", "ms", t, p99),
		barChart("Latency histogram (all packets)", r.LatencyHist),
	}
	if r.Bridge.PID != 0 {
		charts = append(charts,
			lineChart("Bridge CPU", "% of one core", t, cpu),
			lineChart("Bridge RSS", "MiB", t, rss))
	}
	if r.Recorder.PID != 0 {
		charts = append(charts, lineChart("Recorder CPU", "% of one core", t, rcpu))
	}
	return pageTmpl.Execute(w, struct {
		R      *Report
		Rows   [][2]string
		Charts []template.HTML
	}{r, r.summaryRows(), charts})
}

// summaryRows is the table: the figures the issue asks for, in order.
func (r *Report) summaryRows() [][2]string {
	f := func(format string, a ...any) string { return fmt.Sprintf(format, a...) }
	q := func(x Quantiles) string { return f("%.3f / %.3f / %.3f / %.3f", x.P50, x.P95, x.P99, x.Max) }
	na := func(ok bool, s string) string {
		if !ok {
			return "not available"
		}
		return s
	}
	c, rt, sv, rc, b := r.Calls, r.RTP, r.Supervisors, r.Recordings, r.Bridge
	fk, rp := r.Forks, r.Recorder
	return [][2]string{
		{"target", f("%s (spawned: %v)", r.Target, r.Spawned)},
		{"calls attempted / established / failed / dropped", f("%d / %d / %d / %d", c.Attempted, c.Established, c.Failed, c.Dropped)},
		{"calls per second, max concurrent", f("%.2f, %d", c.CPS, c.MaxConcurrent)},
		{"setup ms p50 / p95 / p99 / max", q(c.SetupMS)},
		{"RTP sent / received / lost", f("%d / %d / %d", rt.Sent, rt.Received, rt.Lost)},
		{"RTP loss ratio", f("%.6f (%.4f%%)", rt.LossRatio, 100*rt.LossRatio)},
		{"latency ms p50 / p95 / p99 / max", q(rt.LatencyMS)},
		{"jitter ms p50 / p95 / p99 / max", q(rt.JitterMS)},
		{"duplicates / late / unmatched / misrouted", f("%d / %d / %d / %d", rt.Duplicates, rt.Late, rt.Unmatched, rt.Misrouted)},
		{"impairment dropped / duplicated / reordered", f("%d / %d / %d", rt.Impairment.Dropped, rt.Impairment.Duplicated, rt.Impairment.Reordered)},
		{"supervisor streams / packets received / leaked to parties", na(sv.Available, f("%d / %d / %d", sv.Streams, sv.PacketsReceived, sv.LeakedToParties))},
		{"supervisor streams over SIP / WebRTC, WebRTC packets received", na(sv.Available, f("%d / %d, %d", sv.SIPStreams, sv.WebRTCStreams, sv.WebRTCPacketsReceived))},
		{"recordings expected / found / complete", na(rc.Available, f("%d / %d / %d", rc.Expected, rc.Found, rc.Complete))},
		{"recordings completeness, max skew ms, min correlation", na(rc.Available, f("%.3f, %.3f, %.3f", rc.Completeness, rc.MaxSkewMS, rc.MinCorrelation))},
		{"forked recordings expected / found / complete (at the recorder)", na(fk.Available, f("%d / %d / %d", fk.Expected, fk.Found, fk.Complete))},
		{"forks completeness, max skew ms, min correlation", na(fk.Available, f("%.3f, %.3f, %.3f", fk.Completeness, fk.MaxSkewMS, fk.MinCorrelation))},
		{"bridge CPU s / mean CPU %", na(b.PID != 0, f("%.3f / %.1f", b.CPUSeconds, b.CPUPercentMean))},
		{"bridge RSS max", na(b.PID != 0, f("%.1f MiB", float64(b.RSSMaxBytes)/(1<<20)))},
		{"bridge packets relayed, CPU µs per packet", na(b.Metrics, f("%d, %.3f", b.PacketsRelayed, b.CPUUSPerPacket))},
		{"recorder CPU s / RSS max", na(rp.PID != 0, f("%.3f / %.1f MiB", rp.CPUSeconds, float64(rp.RSSMaxBytes)/(1<<20)))},
		{"harness CPU s", f("%.3f", r.Harness.CPUSeconds)},
	}
}

const chartW, chartH, padL, padB, padT, padR = 560, 220, 56, 28, 26, 12

// lineChart draws y over x as an inline SVG polyline with axes.
func lineChart(title, unit string, x, y []float64) template.HTML {
	var b strings.Builder
	chartOpen(&b, title, unit)
	if len(x) == 0 {
		b.WriteString(`<text x="280" y="120" text-anchor="middle" class="muted">no samples</text></svg>`)
		return template.HTML(b.String())
	}
	xmax := math.Max(x[len(x)-1], 1)
	ymax := niceMax(y)
	axes(&b, xmax, ymax, "s")
	b.WriteString(`<polyline fill="none" stroke="#2563eb" stroke-width="1.6" points="`)
	for i := range x {
		fmt.Fprintf(&b, "%.1f,%.1f ", px(x[i], xmax), py(y[i], ymax))
	}
	b.WriteString(`"/></svg>`)
	return template.HTML(b.String())
}

// barChart draws the latency histogram.
func barChart(title string, bars []Bar) template.HTML {
	var b strings.Builder
	chartOpen(&b, title, "packets")
	if len(bars) == 0 {
		b.WriteString(`<text x="280" y="120" text-anchor="middle" class="muted">no packets</text></svg>`)
		return template.HTML(b.String())
	}
	var ys []float64
	for _, v := range bars {
		ys = append(ys, float64(v.Count))
	}
	ymax := niceMax(ys)
	axes(&b, 0, ymax, "")
	w := float64(chartW-padL-padR) / float64(len(bars))
	for i, v := range bars {
		x := float64(padL) + float64(i)*w
		y := py(float64(v.Count), ymax)
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#16a34a"><title>≤ %.3f ms: %d</title></rect>`,
			x+0.5, y, math.Max(w-1, 0.5), float64(chartH-padB)-y, v.LeMS, v.Count)
	}
	// Label the first, middle and last bar's upper bound (ms).
	for _, i := range []int{0, len(bars) / 2, len(bars) - 1} {
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle" class="tick">%.3g ms</text>`,
			float64(padL)+(float64(i)+0.5)*w, chartH-padB+16, bars[i].LeMS)
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

func chartOpen(b *strings.Builder, title, unit string) {
	fmt.Fprintf(b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" width="%d" height="%d" role="img" aria-label="%s">`,
		chartW, chartH, chartW, chartH, template.HTMLEscapeString(title))
	fmt.Fprintf(b, `<text x="%d" y="16" class="title">%s <tspan class="muted">(%s)</tspan></text>`,
		padL, template.HTMLEscapeString(title), template.HTMLEscapeString(unit))
}

// axes draws the frame, y ticks and (if xmax > 0) x ticks.
func axes(b *strings.Builder, xmax, ymax float64, xunit string) {
	fmt.Fprintf(b, `<path d="M%d %d V%d H%d" fill="none" stroke="#888"/>`, padL, padT, chartH-padB, chartW-padR)
	for i := 0; i <= 4; i++ {
		v := ymax * float64(i) / 4
		y := py(v, ymax)
		fmt.Fprintf(b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#eee"/><text x="%d" y="%.1f" text-anchor="end" class="tick">%s</text>`,
			padL, chartW-padR, y, y, padL-4, y+4, tick(v))
	}
	if xmax > 0 {
		for i := 0; i <= 5; i++ {
			v := xmax * float64(i) / 5
			fmt.Fprintf(b, `<text x="%.1f" y="%d" text-anchor="middle" class="tick">%s%s</text>`, px(v, xmax), chartH-padB+16, tick(v), xunit)
		}
	}
}

func px(x, xmax float64) float64 {
	return float64(padL) + x/xmax*float64(chartW-padL-padR)
}

func py(y, ymax float64) float64 {
	return float64(chartH-padB) - y/ymax*float64(chartH-padB-padT)
}

// niceMax rounds the largest value up to 1, 2 or 5 times a power of ten.
func niceMax(v []float64) float64 {
	m := 0.0
	for _, x := range v {
		if !math.IsNaN(x) && x > m {
			m = x
		}
	}
	if m <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(m)))
	for _, k := range []float64{1, 2, 5, 10} {
		if m <= k*p {
			return k * p
		}
	}
	return 10 * p
}

func tick(v float64) string {
	switch {
	case v == 0:
		return "0"
	case math.Abs(v) >= 1e6:
		return fmt.Sprintf("%.3gM", v/1e6)
	case math.Abs(v) >= 1e4:
		return fmt.Sprintf("%.3gk", v/1e3)
	}
	return fmt.Sprintf("%.3g", v)
}

var pageTmpl = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>bib load: {{.R.Verdict}} ({{.R.Calls.Established}} calls, {{.R.Target}})</title>
<style>
body{font:14px system-ui,sans-serif;margin:24px;color:#111;max-width:1200px}
h1{font-size:20px} .pass{color:#15803d} .fail{color:#b91c1c}
table{border-collapse:collapse;margin:12px 0} td,th{border:1px solid #ddd;padding:4px 8px;text-align:left}
td:nth-child(2){font-variant-numeric:tabular-nums}
.charts{display:flex;flex-wrap:wrap;gap:12px} svg{border:1px solid #eee;background:#fff}
.title{font-size:13px;font-weight:600} .tick{font-size:10px;fill:#555} .muted{fill:#888;color:#888}
</style></head><body>
<h1>bib load — verdict: <span class="{{.R.Verdict}}">{{.R.Verdict}}</span></h1>
<p class="muted">Started {{.R.Started.Format "2006-01-02 15:04:05 MST"}}, {{.R.DurationS}} s.
{{.R.Settings.Calls}} concurrent calls at {{.R.Settings.Rate}} calls/s for {{.R.Settings.DurationS}} s, codec {{.R.Settings.Codec}},
supervisors {{.R.Settings.Supervisors}}{{with .R.Settings.WebRTC}} ({{.}} of them over WebRTC){{end}}, record {{.R.Settings.Record}}, fork {{.R.Settings.Fork}}{{with .R.Settings.ForkProto}} ({{.}}){{end}}.</p>
{{if .R.Failures}}<h2>Failures</h2><ul>{{range .R.Failures}}<li class="fail">{{.}}</li>{{end}}</ul>{{end}}
{{if .R.Notes}}<h2>Notes</h2><ul>{{range .R.Notes}}<li>{{.}}</li>{{end}}</ul>{{end}}
<h2>Summary</h2>
<table>{{range .Rows}}<tr><th>{{index . 0}}</th><td>{{index . 1}}</td></tr>{{end}}</table>
{{with .R.Profile}}<h2>What limits the bridge: CPU profile</h2>
<p class="muted">{{.CPUSeconds}} CPU s sampled over {{.Seconds}} s from t = {{.StartS}} s; saved to {{.File}} (<code>go tool pprof -top {{.File}}</code>).</p>
<table><tr><th>flat %</th><th>cum %</th><th>function</th></tr>
{{range .Top}}<tr><td>{{printf "%.2f" .FlatPct}}</td><td>{{printf "%.2f" .CumPct}}</td><td>{{.Function}}</td></tr>{{end}}</table>
{{if .Syscalls}}<p>System calls: {{printf "%.1f" .SyscallPct}} % of the sampled CPU, by the first caller outside the standard library:</p>
<table><tr><th>% of CPU</th><th>caller</th></tr>
{{range .Syscalls}}<tr><td>{{printf "%.2f" .FlatPct}}</td><td>{{.Function}}</td></tr>{{end}}</table>{{end}}{{end}}
<h2>Over time</h2>
<div class="charts">{{range .Charts}}{{.}}{{end}}</div>
<p class="muted">Thresholds: loss ≤ {{.R.Settings.Thresholds.MaxLoss}}, p99 latency ≤ {{.R.Settings.Thresholds.MaxP99MS}} ms,
recordings completeness ≥ {{.R.Settings.Thresholds.MinCompleteness}}, supervisor leaks ≤ {{.R.Settings.Thresholds.MaxLeaks}},
call success ≥ {{.R.Settings.Thresholds.MinSuccess}}.</p>
</body></html>
`))
