package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"google.golang.org/grpc/codes"
)

// report is a run's result; the JSON field names are stable.
type report struct {
	Date        string   `json:"date"`
	Mode        string   `json:"mode"` // "in-process" or "connect"
	Regions     []string `json:"regions"`
	Groups      int      `json:"groups"`
	GroupSize   int      `json:"group_size"`
	Users       int      `json:"users"`
	BodyBytes   int      `json:"body_bytes"`
	TargetRate  float64  `json:"target_rate"` // messages/s; 0 is as fast as possible
	Senders     int      `json:"senders"`
	WarmupSec   float64  `json:"warmup_sec"`
	MeasuredSec float64  `json:"measured_sec"`
	LinkDelayMs float64  `json:"link_delay_ms"` // one way, every roaming link
	// Links is how in-process roaming links were secured: "mtls",
	// "plaintext", or "" for one region or --connect.
	Links       string  `json:"links,omitempty"`
	SetupSec    float64 `json:"setup_sec"`
	Interrupted bool    `json:"interrupted,omitempty"`

	Sent         int64            `json:"sent"`
	Committed    int64            `json:"committed"`
	Accepted     int64            `json:"accepted"` // answered ACCEPTED only
	Errors       int64            `json:"errors"`
	ErrorsByCode map[string]int64 `json:"errors_by_code,omitempty"`

	CommittedPerSec  float64 `json:"committed_per_sec"`
	DeliveriesPerSec float64 `json:"deliveries_per_sec"`

	// Latency is send to delivery, by whether sender and recipient are in
	// the same region; ByLinks by how many roaming links the path crosses
	// (sender to group home, home to recipient).
	Latency map[string]*latency `json:"latency"`
	ByLinks map[string]*latency `json:"latency_by_links_crossed"`
	// Commit is SendMessage's round trip (the message committed at its
	// group's home), by whether the group is homed where the sender is.
	Commit map[string]*latency `json:"commit"`
	// Overhead is latency minus links crossed × LinkDelayMs; only with a
	// link delay.
	Overhead map[string]*latency `json:"overhead_above_link_delay,omitempty"`
	// LinkLateness is how late the in-process links handed bytes on
	// after the delay asked for (netem's timers), over the whole run:
	// part of Overhead is this, once per link crossed. Only with a link
	// delay; its mean is not measured.
	LinkLateness *latency `json:"link_delay_lateness,omitempty"`

	Deliveries deliveries `json:"deliveries"`

	SessionErrors     int64  `json:"session_errors"`
	FirstSessionError string `json:"first_session_error,omitempty"`

	Machine machine `json:"machine"`
}

// machine is what the run had to run on.
type machine struct {
	CPUs       int `json:"cpus"`
	GOMAXPROCS int `json:"gomaxprocs"`
	// GOGC is the garbage collector's setting at the end of the load (the
	// regions' tuner sets it, stack.TuneGC), GCs the collections this
	// process made during the load.
	GOGC int    `json:"gogc"`
	GCs  uint64 `json:"gc_cycles"`
	// LoadAvg* are the one-minute load averages at the start and end of
	// the load; well above CPUs, other processes took CPU from the run.
	LoadAvgBefore float64 `json:"loadavg_before"`
	LoadAvgAfter  float64 `json:"loadavg_after"`
	// CoresUsed is this process's CPU time during the load over its wall
	// time; in-process regions and the benchmark's clients together.
	CoresUsed float64 `json:"cores_used"`
	// OtherProcessCores is the CPU the rest of the machine used meanwhile
	// (-1 where /proc/stat is missing): what the run did not get.
	OtherProcessCores float64 `json:"other_process_cores"`
}

// latency summarises a histogram, in milliseconds.
type latency struct {
	Count  int64   `json:"count"`
	P50Ms  float64 `json:"p50_ms"`
	P99Ms  float64 `json:"p99_ms"`
	P999Ms float64 `json:"p99_9_ms"`
	MaxMs  float64 `json:"max_ms"`
	MeanMs float64 `json:"mean_ms"`
}

// deliveries accounts for every (recipient, message) pair.
type deliveries struct {
	// Expected is committed messages × members of their group.
	Expected int64 `json:"expected"`
	Received int64 `json:"received"`
	Missing  int64 `json:"missing"`
	// Duplicates are live deliveries of a (recipient, group, seq) that
	// had been delivered live before.
	Duplicates int64 `json:"duplicates"`
	// CaughtUp were fetched after a CatchUp instead of pushed.
	CaughtUp int64 `json:"caught_up"`
	// Unconfirmed were received but their send got no answer (an error
	// after the commit).
	Unconfirmed int64 `json:"unconfirmed"`
	Resent      int64 `json:"resent"`       // attempt > 1
	OutOfOrder  int64 `json:"out_of_order"` // seq below one received before
	Foreign     int64 `json:"foreign"`      // not a benchmark message
	// Drained says every expected delivery arrived before --drain passed.
	Drained bool `json:"drained"`
}

type reportTimes struct {
	setup, measured time.Duration
}

// Keys of the latency maps.
var (
	classNames  = [classes]string{"same_region", "cross_region"}
	commitNames = [classes]string{"home_here", "home_elsewhere"}
)

func newReport(cfg config, pop *population, l *ledger, t reportTimes, m machine, drained, interrupted bool) *report {
	missing, unconfirmed := l.tally()
	secs := max(t.measured.Seconds(), 1e-9)
	r := &report{
		Date:        time.Now().UTC().Format(time.RFC3339),
		Mode:        "in-process",
		Regions:     pop.regions,
		Groups:      len(pop.groups),
		GroupSize:   cfg.GroupSize,
		Users:       len(pop.users),
		BodyBytes:   cfg.BodyBytes,
		TargetRate:  cfg.Rate,
		Senders:     cfg.Senders,
		WarmupSec:   cfg.Warmup.Seconds(),
		MeasuredSec: t.measured.Seconds(),
		LinkDelayMs: ms(cfg.LinkDelay),
		SetupSec:    t.setup.Seconds(),
		Interrupted: interrupted,

		Sent:             l.sent.Load(),
		Committed:        l.committed.Load(),
		Accepted:         l.accepted.Load(),
		CommittedPerSec:  float64(l.committedInWindow.Load()) / secs,
		DeliveriesPerSec: float64(l.deliveriesInWindow.Load()) / secs,
		Latency:          make(map[string]*latency),
		ByLinks:          make(map[string]*latency),
		Commit:           make(map[string]*latency),
		Deliveries: deliveries{
			Expected:    l.expected.Load(),
			Received:    l.expected.Load() - missing,
			Missing:     missing,
			Duplicates:  l.duplicates.Load(),
			CaughtUp:    l.caughtUp.Load(),
			Unconfirmed: unconfirmed,
			Resent:      l.resent.Load(),
			OutOfOrder:  l.reordered.Load(),
			Foreign:     l.foreign.Load(),
			Drained:     drained,
		},
		SessionErrors: l.sessionErrs.Load() + l.catchUpDropped.Load(),
		Machine:       m,
	}
	switch {
	case cfg.Connect != nil:
		r.Mode = "connect"
	case cfg.Regions > 1 && cfg.PlaintextLinks:
		r.Links = "plaintext"
	case cfg.Regions > 1:
		r.Links = "mtls"
	}
	if p := l.firstSessionErr.Load(); p != nil {
		r.FirstSessionError = *p
	}
	for c := range l.errs {
		if n := l.errs[c].Load(); n > 0 {
			r.Errors += n
			if r.ErrorsByCode == nil {
				r.ErrorsByCode = make(map[string]int64)
			}
			name := "other"
			if c < len(l.errs)-1 {
				name = codes.Code(c).String()
			}
			r.ErrorsByCode[name] = n
		}
	}
	h := l.merged()
	for c := range classes {
		r.Latency[classNames[c]] = summarize(h.latency[c])
		r.Commit[commitNames[c]] = summarize(h.commit[c])
	}
	for hops := range h.byHops {
		if h.byHops[hops].TotalCount() > 0 {
			r.ByLinks[fmt.Sprint(hops)] = summarize(h.byHops[hops])
		}
	}
	if cfg.LinkDelay > 0 {
		r.Overhead = make(map[string]*latency)
		for c := range classes {
			r.Overhead[classNames[c]] = summarize(h.overhead[c])
		}
	}
	return r
}

func summarize(h *hdrhistogram.Histogram) *latency {
	if h.TotalCount() == 0 {
		return &latency{}
	}
	us := func(v int64) float64 { return float64(v) / 1000 }
	return &latency{
		Count:  h.TotalCount(),
		P50Ms:  us(h.ValueAtQuantile(50)),
		P99Ms:  us(h.ValueAtQuantile(99)),
		P999Ms: us(h.ValueAtQuantile(99.9)),
		MaxMs:  us(h.Max()),
		MeanMs: h.Mean() / 1000,
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func (r *report) writeJSON(w io.Writer) error { return writeJSON(w, r) }

// writeJSON prints a report as indented JSON.
func writeJSON(w io.Writer, r any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func (r *report) writeText(w io.Writer) error {
	var b strings.Builder
	rate := "as fast as possible"
	if r.TargetRate > 0 {
		rate = fmt.Sprintf("target %.0f msg/s", r.TargetRate)
	}
	fmt.Fprintf(&b, "roambench %s: %d region(s) %s (%s), %d groups × %d members (%d users), %d-byte bodies\n",
		r.Date, len(r.Regions), r.Mode, strings.Join(r.Regions, ", "), r.Groups, r.GroupSize, r.Users, r.BodyBytes)
	fmt.Fprintf(&b, "load: %s, %d senders, %.1fs measured after %.1fs warm-up (setup took %.1fs)", rate, r.Senders, r.MeasuredSec, r.WarmupSec, r.SetupSec)
	if r.Links != "" {
		fmt.Fprintf(&b, "; roaming links %s", r.Links)
	}
	if r.LinkDelayMs > 0 {
		fmt.Fprintf(&b, "; link delay %gms one way", r.LinkDelayMs)
	}
	if r.Interrupted {
		b.WriteString("; INTERRUPTED")
	}
	b.WriteString("\n\n")

	row := func(name string, l *latency) {
		if l == nil || l.Count == 0 {
			fmt.Fprintf(&b, "  %-28s %9d %9s %9s %9s %9s\n", name, 0, "-", "-", "-", "-")
			return
		}
		fmt.Fprintf(&b, "  %-28s %9d %9.3f %9.3f %9.3f %9.3f\n", name, l.Count, l.P50Ms, l.P99Ms, l.P999Ms, l.MaxMs)
	}
	fmt.Fprintf(&b, "%-30s %9s %9s %9s %9s %9s\n", "latency (ms)", "count", "p50", "p99", "p99.9", "max")
	b.WriteString("send to delivery\n")
	row("same-region", r.Latency[classNames[sameRegion]])
	row("cross-region", r.Latency[classNames[crossRegion]])
	for hops := range maxHops + 1 {
		if l, ok := r.ByLinks[fmt.Sprint(hops)]; ok {
			row(fmt.Sprintf("%d link(s) crossed", hops), l)
		}
	}
	if r.Overhead != nil {
		fmt.Fprintf(&b, "send to delivery minus links crossed × %gms\n", r.LinkDelayMs)
		row("same-region", r.Overhead[classNames[sameRegion]])
		row("cross-region", r.Overhead[classNames[crossRegion]])
		if r.LinkLateness != nil {
			b.WriteString("the links' own lateness after the delay (netem's timers, per crossing)\n")
			row("bytes handed on", r.LinkLateness)
		}
	}
	b.WriteString("commit (SendMessage round trip)\n")
	row("group homed in sender's region", r.Commit[commitNames[sameRegion]])
	row("group homed elsewhere", r.Commit[commitNames[crossRegion]])
	d := r.Deliveries
	fmt.Fprintf(&b, "\nthroughput  %.0f committed msg/s, %.0f deliveries/s\n", r.CommittedPerSec, r.DeliveriesPerSec)
	fmt.Fprintf(&b, "sends       %d sent, %d committed, %d accepted only, %d errors", r.Sent, r.Committed, r.Accepted, r.Errors)
	if len(r.ErrorsByCode) > 0 {
		fmt.Fprintf(&b, " %v", r.ErrorsByCode)
	}
	fmt.Fprintf(&b, "\ndeliveries  %d expected, %d received, %d missing, %d duplicates", d.Expected, d.Received, d.Missing, d.Duplicates)
	fmt.Fprintf(&b, " (%d by catch-up, %d resent, %d out of order, %d unconfirmed, %d foreign)\n", d.CaughtUp, d.Resent, d.OutOfOrder, d.Unconfirmed, d.Foreign)
	if !d.Drained {
		b.WriteString("            not all expected deliveries arrived within --drain\n")
	}
	fmt.Fprintf(&b, "machine     %s\n", r.Machine)
	if r.SessionErrors > 0 {
		fmt.Fprintf(&b, "sessions    %d errors; first: %s\n", r.SessionErrors, r.FirstSessionError)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
