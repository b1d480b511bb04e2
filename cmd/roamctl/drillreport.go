package main

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/roamfed/roamfed/internal/checker"
)

// drillReport is what a drill run found.
type drillReport struct {
	RunID      string
	Federation string
	X, Y       string
	Config     runConfig
	Users      int
	Groups     int

	// The timeline; zero times did not happen.
	start, cutAt, restoredAt, loadStoppedAt, settledAt, caughtUpAt time.Time
	// The first message between x and y sent after the cut, delivered.
	firstBetween time.Time
	watch        watchState

	Check  checker.Report
	Verify checker.VerifyResult

	Sessions          int64 // session and history errors the followers survived
	FirstSessionError string
	Busy              int64 // load ticks dropped because every sender was busy
}

// OK reports whether the run met the guarantees.
func (r *drillReport) OK() bool { return r.Check.OK() && r.Verify.OK() }

// span returns to-from when both happened.
func span(from, to time.Time) (time.Duration, bool) {
	if from.IsZero() || to.IsZero() {
		return 0, false
	}
	return to.Sub(from), true
}

func later(a, b time.Time) time.Time {
	if a.IsZero() || b.IsZero() {
		return time.Time{}
	}
	if a.After(b) {
		return a
	}
	return b
}

// The measures, each with whether it was observed.
func (r *drillReport) detect() (time.Duration, bool) {
	return span(r.cutAt, later(r.watch.downX, r.watch.downY))
}
func (r *drillReport) reroute() (time.Duration, bool)  { return span(r.cutAt, r.watch.routeX) }
func (r *drillReport) rerouteY() (time.Duration, bool) { return span(r.cutAt, r.watch.routeY) }
func (r *drillReport) firstMsg() (time.Duration, bool) { return span(r.cutAt, r.firstBetween) }
func (r *drillReport) heal() (time.Duration, bool) {
	return span(r.restoredAt, later(r.watch.upX, r.watch.upY))
}
func (r *drillReport) catchUp() (time.Duration, bool) { return span(r.restoredAt, r.caughtUpAt) }

// writeDrillReport prints the report for a person.
func writeDrillReport(w io.Writer, r *drillReport) {
	c := r.Check.Totals
	cfg := r.Config
	fmt.Fprintf(w, "drill %s: cut %s-%s under load, federation %s\n", r.RunID, r.X, r.Y, r.Federation)
	fmt.Fprintf(w, "  load         %g msg/s for %s from %d users in %d groups; cut at %s, restored at %s\n",
		cfg.rate, cfg.duration, r.Users, r.Groups, offset(r.start, r.cutAt), offset(r.start, r.restoredAt))

	fmt.Fprintln(w, "link")
	fmt.Fprintf(w, "  detect       %s\n", measure2(r.detect, fmt.Sprintf("(%s and %s both report it cut or down)", r.X, r.Y), "not seen at both ends"))
	rr := "no route through a third region seen"
	if d, ok := r.reroute(); ok {
		rr = fmt.Sprintf("%s (%s→%s via %s", duration(d), r.X, r.Y, r.watch.viaX)
		if d2, ok := r.rerouteY(); ok {
			rr += fmt.Sprintf("; %s→%s via %s after %s", r.Y, r.X, r.watch.viaY, duration(d2))
		}
		rr += ")"
	}
	if r.watch.noRoute {
		rr += "; for a while no route at all"
	}
	fmt.Fprintf(w, "  reroute      %s\n", rr)
	fmt.Fprintf(w, "  first across %s\n", measure2(r.firstMsg, fmt.Sprintf("(first %s↔%s message sent after the cut, delivered)", r.X, r.Y), "no message between the ends was delivered after the cut"))
	fmt.Fprintf(w, "  heal         %s\n", measure2(r.heal, "(both ends report it up after the restore)", "not seen up at both ends"))
	fmt.Fprintf(w, "  catch-up     %s\n", measure2(r.catchUp, "(queues empty and every member has what was sent before the restore)", "not caught up"))
	settled := "not settled within --settle-timeout " + cfg.settle.String()
	if d, ok := span(r.loadStoppedAt, r.settledAt); ok {
		settled = fmt.Sprintf("%s after the load stopped", duration(d))
	}
	fmt.Fprintf(w, "  settled      %s\n", settled)

	fmt.Fprintln(w, "messages")
	fmt.Fprintf(w, "  sent         %d (%d attempts, %d errors, %d never answered)\n", c.Messages, c.Attempts, c.SendErrors, c.Unacknowledged)
	fmt.Fprintf(w, "  committed    %d at once\n", c.Committed)
	fmt.Fprintf(w, "  accepted     %d, of which %d committed later (%d receipts, %d refused)\n", c.Accepted, c.AcceptedCommitted, c.Receipts, c.ReceiptErrors)
	fmt.Fprintf(w, "  delivered    %d of %d member deliveries (%d live, %d by catch-up)\n", c.Delivered, c.Expected, c.Live, c.CaughtUp)
	lag := "-"
	if c.LagMax > 0 {
		lag = fmt.Sprintf("p50 %s, p99 %s, worst %s", duration(c.LagP50), duration(c.LagP99), duration(c.LagMax))
	}
	fmt.Fprintf(w, "  lag          %s\n", lag)

	fmt.Fprintln(w, "checks")
	check := func(name string, n int) {
		verdict := "ok"
		if n != 0 {
			verdict = "FAIL"
		}
		fmt.Fprintf(w, "  %-14s %d  %s\n", name, n, verdict)
	}
	check("lost", c.Lost)
	check("duplicates", c.Duplicates)
	check("out of order", c.OutOfOrder)
	check("gaps", c.Gaps)
	vp := len(r.Verify.Problems) + r.Verify.Unlisted
	check("history", vp)
	fmt.Fprintf(w, "  (%d histories read back, %d messages; raw duplicates %d, raw reordered %d, skipped %d: information)\n",
		r.Verify.Histories, r.Verify.Messages, c.RawDuplicates, c.RawReordered, c.Skipped)
	if r.Sessions > 0 {
		fmt.Fprintf(w, "  session errors %d, first: %s\n", r.Sessions, r.FirstSessionError)
	}
	if r.Busy > 0 {
		fmt.Fprintf(w, "  %d sends not made: all %d senders were busy (raise --inflight or lower --rate)\n", r.Busy, cfg.inflight)
	}

	if len(r.Check.Groups) > 0 {
		fmt.Fprintln(w, "groups")
		tw := table(w)
		row(tw, "  GROUP", "HOME", "MEMBERS", "LAST SEQ", "SENT", "COMMITTED", "ACCEPTED", "DELIVERED", "LOST", "DUPS", "ORDER", "GAPS", "WORST LAG")
		for _, g := range r.Check.Groups {
			row(tw, "  "+g.Group, g.Home, g.Members, g.LastSeq, g.Messages, g.Committed, g.Accepted,
				fmt.Sprintf("%d/%d", g.Delivered, g.Expected), g.Lost, g.Duplicates, g.OutOfOrder, g.Gaps, duration(g.LagMax))
		}
		tw.Flush()
	}
	if ps := r.Check.Problems; len(ps) > 0 {
		fmt.Fprintln(w, "problems")
		for _, p := range ps {
			fmt.Fprintf(w, "  %s\n", p)
		}
		if r.Check.Unlisted > 0 {
			fmt.Fprintf(w, "  ... and %d more\n", r.Check.Unlisted)
		}
	}
	if ps := r.Verify.Problems; len(ps) > 0 {
		fmt.Fprintln(w, "history problems")
		for _, p := range ps {
			fmt.Fprintf(w, "  %s\n", p)
		}
		if r.Verify.Unlisted > 0 {
			fmt.Fprintf(w, "  ... and %d more\n", r.Verify.Unlisted)
		}
	}
	if r.OK() {
		fmt.Fprintln(w, "result: PASS")
	} else {
		fmt.Fprintln(w, "result: FAIL")
	}
}

func measure2(f func() (time.Duration, bool), what, otherwise string) string {
	d, ok := f()
	if !ok {
		return otherwise
	}
	return duration(d) + " " + what
}

// offset renders t as time since start.
func offset(start, t time.Time) string {
	d, ok := span(start, t)
	if !ok {
		return "-"
	}
	return duration(d)
}

// drillJSON is the report as --json prints it; durations are in
// milliseconds, null when not observed.
type drillJSON struct {
	RunID      string   `json:"run_id"`
	Federation string   `json:"federation"`
	Link       string   `json:"link"`
	Rate       float64  `json:"rate"`
	DurationMS float64  `json:"duration_ms"`
	Users      int      `json:"users"`
	GroupCount int      `json:"group_count"`
	CutAtMS    *float64 `json:"cut_at_ms"`
	RestoredMS *float64 `json:"restored_at_ms"`
	StoppedMS  *float64 `json:"load_stopped_at_ms"`
	SettledMS  *float64 `json:"settled_at_ms"`

	DetectMS       *float64 `json:"detect_ms"`
	RerouteMS      *float64 `json:"reroute_ms"`
	RerouteVia     string   `json:"reroute_via,omitempty"`
	RerouteBackMS  *float64 `json:"reroute_back_ms"`
	RerouteBackVia string   `json:"reroute_back_via,omitempty"`
	NoRoute        bool     `json:"no_route_seen"`
	FirstAcrossMS  *float64 `json:"first_across_ms"`
	HealMS         *float64 `json:"heal_ms"`
	CatchUpMS      *float64 `json:"catch_up_ms"`

	Counts   checker.Counts `json:"counts"`
	LagP50MS float64        `json:"lag_p50_ms"`
	LagP99MS float64        `json:"lag_p99_ms"`
	LagMaxMS float64        `json:"lag_max_ms"`

	Groups            []checker.GroupReport `json:"groups"`
	Problems          []checker.Problem     `json:"problems,omitempty"`
	UnlistedProblems  int                   `json:"unlisted_problems,omitempty"`
	Verify            checker.VerifyResult  `json:"history"`
	SessionErrors     int64                 `json:"session_errors"`
	FirstSessionError string                `json:"first_session_error,omitempty"`
	BusySkips         int64                 `json:"busy_skips"`
	OK                bool                  `json:"ok"`
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func msp(d time.Duration, ok bool) *float64 {
	if !ok {
		return nil
	}
	v := ms(d)
	return &v
}

func writeDrillJSON(w io.Writer, r *drillReport) error {
	c := r.Check.Totals
	j := drillJSON{
		RunID: r.RunID, Federation: r.Federation, Link: r.X + "-" + r.Y,
		Rate: r.Config.rate, DurationMS: ms(r.Config.duration), Users: r.Users, GroupCount: r.Groups,
		CutAtMS:    msp(span(r.start, r.cutAt)),
		RestoredMS: msp(span(r.start, r.restoredAt)),
		StoppedMS:  msp(span(r.start, r.loadStoppedAt)),
		SettledMS:  msp(span(r.start, r.settledAt)),
		DetectMS:   msp(r.detect()), RerouteMS: msp(r.reroute()), RerouteVia: r.watch.viaX,
		RerouteBackMS: msp(r.rerouteY()), RerouteBackVia: r.watch.viaY, NoRoute: r.watch.noRoute,
		FirstAcrossMS: msp(r.firstMsg()), HealMS: msp(r.heal()), CatchUpMS: msp(r.catchUp()),
		Counts: c, LagP50MS: ms(c.LagP50), LagP99MS: ms(c.LagP99), LagMaxMS: ms(c.LagMax),
		Groups: r.Check.Groups, Problems: r.Check.Problems, UnlistedProblems: r.Check.Unlisted,
		Verify: r.Verify, SessionErrors: r.Sessions, FirstSessionError: r.FirstSessionError,
		BusySkips: r.Busy, OK: r.OK(),
	}
	if j.Groups == nil {
		j.Groups = []checker.GroupReport{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(j)
}
