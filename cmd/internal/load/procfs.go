package load

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat. It
// is 100 on every Linux architecture Go supports (the kernel fixes it for
// user space regardless of CONFIG_HZ).
const clockTicks = 100

// ProcSample is one reading of a process's kernel accounting.
type ProcSample struct {
	CPUSeconds float64 // utime + stime
	RSSBytes   uint64  // VmRSS
	HWMBytes   uint64  // VmHWM: peak resident set size
}

var errProcFormat = errors.New("unexpected /proc format")

// parseStat extracts utime+stime (seconds) from the contents of
// /proc/PID/stat. The command name (field 2) is in parentheses and may hold
// spaces and parentheses itself, so fields are counted after the last ')'.
func parseStat(b []byte) (float64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("stat: no ')': %w", errProcFormat)
	}
	f := strings.Fields(string(b[i+1:]))
	// After the name: field 3 (state) is f[0]; utime is field 14, stime 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("stat: %d fields after name: %w", len(f), errProcFormat)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("stat: utime/stime: %w", err)
	}
	return float64(ut+st) / clockTicks, nil
}

// parseStatus extracts VmRSS and VmHWM (bytes) from /proc/PID/status.
func parseStatus(b []byte) (rss, hwm uint64, err error) {
	var haveRSS bool
	for line := range strings.SplitSeq(string(b), "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		f := strings.Fields(val)
		if len(f) != 2 || f[1] != "kB" {
			return 0, 0, fmt.Errorf("status: %s: %q: %w", key, val, errProcFormat)
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("status: %s: %w", key, err)
		}
		if key == "VmRSS" {
			rss, haveRSS = n*1024, true
		} else {
			hwm = n * 1024
		}
	}
	if !haveRSS {
		return 0, 0, fmt.Errorf("status: no VmRSS (kernel thread or zombie?): %w", errProcFormat)
	}
	return rss, hwm, nil
}

// readProc samples a local process through procfs.
func readProc(root string, pid int) (ProcSample, error) {
	dir := fmt.Sprintf("%s/%d/", root, pid)
	st, err := os.ReadFile(dir + "stat")
	if err != nil {
		return ProcSample{}, err
	}
	cpu, err := parseStat(st)
	if err != nil {
		return ProcSample{}, err
	}
	status, err := os.ReadFile(dir + "status")
	if err != nil {
		return ProcSample{}, err
	}
	rss, hwm, err := parseStatus(status)
	if err != nil {
		return ProcSample{}, err
	}
	return ProcSample{CPUSeconds: cpu, RSSBytes: rss, HWMBytes: hwm}, nil
}

// udpDrops sums the kernel's per-socket receive drop counters
// (/proc/net/udp, last column) for the local ports given: datagrams the
// harness's own sockets discarded because their buffers were full. They are
// losses the bridge did not cause.
func udpDrops(table []byte, ports map[uint16]bool) uint64 {
	var sum uint64
	for i, line := range strings.Split(string(table), "\n") {
		f := strings.Fields(line)
		if i == 0 || len(f) < 13 {
			continue
		}
		_, portHex, ok := strings.Cut(f[1], ":")
		if !ok {
			continue
		}
		p, err := strconv.ParseUint(portHex, 16, 16)
		if err != nil || !ports[uint16(p)] {
			continue
		}
		d, err := strconv.ParseUint(f[len(f)-1], 10, 64)
		if err == nil {
			sum += d
		}
	}
	return sum
}
