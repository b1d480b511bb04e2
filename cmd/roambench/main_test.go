package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// ownGoroutines returns the stacks of goroutines running this package's
// code, other than the test's own.
func ownGoroutines() []string {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "\nmain.") && !strings.Contains(g, "main.Test") && !strings.Contains(g, "testing.") {
			out = append(out, g)
		}
	}
	return out
}

func checkNoLeaks(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		left := ownGoroutines()
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d roambench goroutines left:\n%s", len(left), strings.Join(left, "\n\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func tinyConfig() config {
	cfg := defaultConfig()
	cfg.Regions = 3
	cfg.Groups = 2
	cfg.GroupSize = 3
	cfg.Rate = 40
	cfg.Senders = 4
	cfg.Warmup = 200 * time.Millisecond
	cfg.Duration = time.Second
	cfg.Drain = 10 * time.Second
	cfg.ConnsPerRegion = 1
	cfg.Progress = false
	cfg.JSON = true
	return cfg
}

// runJSON runs cfg through run, as main would, and decodes its report.
func runJSON(t *testing.T, cfg config) *report {
	t.Helper()
	return runReport[report](t, cfg)
}

// runReport runs cfg through run and decodes its JSON report as an R.
func runReport[R any](t *testing.T, cfg config) *R {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	if err := run(ctx, cfg, &stdout, &stderr); err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, stderr.String())
	}
	var r R
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, stdout.String())
	}
	return &r
}

// TestTinyFederation runs three regions in-process with two groups of
// three, spread over the regions, and checks that every member received
// every committed message exactly once.
func TestTinyFederation(t *testing.T) {
	r := runJSON(t, tinyConfig())
	d := r.Deliveries
	if d.Missing != 0 || d.Duplicates != 0 || !d.Drained {
		t.Errorf("deliveries %+v; want none missing, no duplicates, drained", d)
	}
	if r.Committed == 0 || r.Errors != 0 || r.SessionErrors != 0 {
		t.Errorf("committed %d, errors %d %v, session errors %d (%s)", r.Committed, r.Errors, r.ErrorsByCode, r.SessionErrors, r.FirstSessionError)
	}
	if want := r.Committed * 3; d.Expected != want || d.Received != want {
		t.Errorf("expected %d, received %d deliveries; want %d (3 members × %d committed)", d.Expected, d.Received, want, r.Committed)
	}
	// Members are spread over all three regions, so both kinds of path
	// are measured.
	for _, c := range classNames {
		if r.Latency[c].Count == 0 {
			t.Errorf("no %s latency recorded: %+v", c, r.Latency)
		}
	}
	if len(r.Regions) != 3 || r.Mode != "in-process" || r.Links != "mtls" {
		t.Errorf("regions %v, mode %q, links %q; want 3 in-process with mutual TLS", r.Regions, r.Mode, r.Links)
	}
	checkNoLeaks(t)
}

// TestLinkDelay checks that --link-delay reaches the roaming links: a path
// that crosses a link takes at least the delay, and the overhead is
// reported.
func TestLinkDelay(t *testing.T) {
	cfg := tinyConfig()
	cfg.LinkDelay = 15 * time.Millisecond
	r := runJSON(t, cfg)
	if r.Deliveries.Missing != 0 || r.Deliveries.Duplicates != 0 {
		t.Errorf("deliveries %+v", r.Deliveries)
	}
	for links, want := range map[string]float64{"1": 15, "2": 30} {
		l := r.ByLinks[links]
		if l == nil || l.Count == 0 {
			t.Errorf("nothing crossed %s link(s): %v", links, r.ByLinks)
			continue
		}
		if l.P50Ms < want {
			t.Errorf("p50 over %s link(s) is %.3fms; want at least %.0fms", links, l.P50Ms, want)
		}
	}
	if r.Overhead == nil || r.Overhead["cross_region"].Count == 0 {
		t.Errorf("no overhead reported: %+v", r.Overhead)
	}
	if l := r.LinkLateness; l == nil || l.Count == 0 || l.P50Ms > l.MaxMs {
		t.Errorf("links' lateness: %+v", l)
	}
	checkNoLeaks(t)
}

func TestOneRegion(t *testing.T) {
	cfg := tinyConfig()
	cfg.Regions = 1
	r := runJSON(t, cfg)
	if r.Deliveries.Missing != 0 || r.Deliveries.Duplicates != 0 || r.Committed == 0 {
		t.Errorf("committed %d, deliveries %+v", r.Committed, r.Deliveries)
	}
	if n := r.Latency["cross_region"].Count; n != 0 {
		t.Errorf("%d cross-region deliveries in one region", n)
	}
	checkNoLeaks(t)
}

// TestTransportFloor runs the load through the floor's bare servers, as
// fast as it goes and then paced over delayed links: every delivery handed
// to a session arrives, every send the client saw answered was handed to
// all its group's members, and latency is measured on both sides of the
// links.
func TestTransportFloor(t *testing.T) {
	for _, tc := range []struct {
		name      string
		rate      float64
		delay     time.Duration
		plaintext bool
	}{
		{"unpaced, mTLS", 0, 0, false},
		{"delayed plaintext links", 40, 5 * time.Millisecond, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tinyConfig()
			cfg.TransportFloor = true
			cfg.Rate = tc.rate
			cfg.LinkDelay = tc.delay
			cfg.PlaintextLinks = tc.plaintext
			cfg.Duration = 500 * time.Millisecond
			if err := cfg.validate(); err != nil {
				t.Fatal(err)
			}
			r := runReport[floorReport](t, cfg)
			if r.Sent == 0 || r.MsgPerSec <= 0 || r.DelivPerS <= 0 || r.Regions != 3 {
				t.Errorf("nothing measured: %+v", *r)
			}
			if want := map[bool]string{false: "mtls", true: "plaintext"}[tc.plaintext]; r.Links != want {
				t.Errorf("links %q; want %q", r.Links, want)
			}
			if r.Missing != 0 || r.Delivered != r.Enqueued {
				t.Errorf("%d deliveries handed to sessions, %d received", r.Enqueued, r.Delivered)
			}
			if r.Enqueued < r.Sent*int64(cfg.GroupSize) {
				t.Errorf("%d sends answered, %d deliveries handed to sessions; want at least %d", r.Sent, r.Enqueued, r.Sent*int64(cfg.GroupSize))
			}
			if r.SameRegion.Count == 0 || r.CrossRegion.Count == 0 {
				t.Errorf("latency: same-region %+v, cross-region %+v; want both measured", *r.SameRegion, *r.CrossRegion)
			}
			switch {
			case tc.delay == 0 && r.Overhead != nil:
				t.Errorf("overhead %+v without a link delay", *r.Overhead)
			case tc.delay > 0 && (r.Overhead == nil || r.Overhead.Count == 0):
				t.Errorf("no overhead measured over %s links", tc.delay)
			case tc.delay > 0 && r.CrossRegion.P50Ms < ms(tc.delay):
				// A cross-region delivery crosses at least one link.
				t.Errorf("cross-region p50 %.3f ms over %s links", r.CrossRegion.P50Ms, tc.delay)
			}
			checkNoLeaks(t)
		})
	}

	cfg := tinyConfig()
	cfg.TransportFloor = true
	cfg.Connect = []regionAddr{{Name: "ap", Addr: "127.0.0.1:7101"}}
	if err := cfg.validate(); err == nil || !strings.Contains(err.Error(), "--transport-floor") {
		t.Errorf("--transport-floor with --connect: %v", err)
	}
}

func TestParseFlags(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		wantErr string
	}{
		{nil, ""},
		{[]string{"--regions", "1", "--rate", "1000"}, ""},
		{[]string{"--connect", "ap=127.0.0.1:7101,eu=127.0.0.1:7102"}, ""},
		{[]string{"--regions", "0"}, "--regions"},
		{[]string{"--group-size", "0"}, "--group-size"},
		{[]string{"--rate", "-1"}, "--rate"},
		{[]string{"--link-delay", "20ms", "--regions", "1"}, "--link-delay"},
		{[]string{"--connect", "ap=127.0.0.1:7101", "--link-delay", "5ms"}, "--link-delay"},
		{[]string{"--connect", "ap=127.0.0.1:7101", "--regions", "2"}, "--regions"},
		{[]string{"--connect", "ap=127.0.0.1:7101", "--plaintext-links"}, "--plaintext-links"},
		{[]string{"--plaintext-links", "--link-delay", "1ms"}, ""},
		{[]string{"--connect", "ap"}, "--connect"},
		{[]string{"--connect", "ap=nowhere"}, "--connect"},
		{[]string{"--connect", "ap=127.0.0.1:1,ap=127.0.0.1:2"}, "twice"},
		{[]string{"--groups", "1000", "--group-size", "1000"}, "users"},
		{[]string{"--log-level", "loud"}, "--log-level"},
		{[]string{"stray"}, "unexpected"},
	} {
		_, err := parseFlags(tc.args, io.Discard)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%q: %v", tc.args, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%q: error %v, want one mentioning %q", tc.args, err, tc.wantErr)
		}
	}
}

func TestBody(t *testing.T) {
	for _, at := range []time.Duration{0, time.Millisecond, 10 * time.Hour} {
		b := encodeBody(at, minBodyBytes)
		if len(b) != minBodyBytes {
			t.Errorf("body of %v is %d bytes, want %d", at, len(b), minBodyBytes)
		}
		if got, ok := decodeBody(b); !ok || got != at {
			t.Errorf("decode(%q) = %v, %v; want %v", b, got, ok, at)
		}
	}
	if _, ok := decodeBody("hello"); ok {
		t.Error("decoded a body that is not the benchmark's")
	}
}

func TestBitset(t *testing.T) {
	var a, b bitset
	for _, i := range []uint64{1, 2, 3, 64, 200} {
		if a.set(i) {
			t.Fatalf("%d set twice", i)
		}
	}
	if !a.set(64) {
		t.Fatal("64 not remembered")
	}
	b.set(2)
	b.set(200)
	b.set(500)
	if n := a.countNotIn(b); n != 3 {
		t.Errorf("a\\b has %d, want 3", n)
	}
	if n := b.countNotIn(a); n != 1 {
		t.Errorf("b\\a has %d, want 1", n)
	}
}

func TestProcStatus(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	st, err := procStatus(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st["VmRSS"] <= 0 || st["VmHWM"] < st["VmRSS"] {
		t.Errorf("VmRSS %d kB, VmHWM %d kB", st["VmRSS"], st["VmHWM"])
	}
}
