package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/roamfed/roamfed/api/admin/v1"
	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
)

// table writes aligned columns; call flush when done.
func table(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

// row writes one tab-separated row.
func row(w io.Writer, cols ...any) {
	for i, c := range cols {
		if i > 0 {
			io.WriteString(w, "\t")
		}
		fmt.Fprint(w, c)
	}
	io.WriteString(w, "\n")
}

// linkState is a link state as operators say it.
func linkState(s roamingv1.LinkState) string {
	switch s {
	case roamingv1.LinkState_LINK_STATE_UP:
		return "up"
	case roamingv1.LinkState_LINK_STATE_DOWN:
		return "down"
	case roamingv1.LinkState_LINK_STATE_CUT:
		return "cut"
	}
	return "unknown"
}

// route says how traffic reaches the peer: "direct", "via X" or "no route".
func route(l *adminv1.Link) string {
	switch {
	case l.GetNoRoute():
		return "no route"
	case l.GetVia() != "":
		return "via " + l.GetVia()
	}
	return "direct"
}

// rtt renders a round trip; "-" when none was measured.
func rtt(micros uint64) string {
	if micros == 0 {
		return "-"
	}
	return duration(time.Duration(micros) * time.Microsecond)
}

// duration rounds d to what a person reads: 3 significant digits below a
// minute, whole seconds above.
func duration(d time.Duration) string {
	switch {
	case d < 0:
		return "-"
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < 10*time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	case d < 100*time.Millisecond:
		return d.Round(100 * time.Microsecond).String()
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(10 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

// age is how long ago t was, coarsely: "4m59s", "3h2m", "-" for no time.
func age(t *timestamppb.Timestamp, now time.Time) string {
	if t == nil || t.AsTime().Year() < 2000 {
		return "-"
	}
	d := now.Sub(t.AsTime())
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	}
	return strings.TrimSuffix(d.Round(time.Minute).String(), "0s")
}

// bytes renders a byte count with a binary unit.
func byteSize(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// itemsBytes renders "12 (3.1 KiB)", or "0".
func itemsBytes(items, b uint64) string {
	if items == 0 && b == 0 {
		return "0"
	}
	return fmt.Sprintf("%d (%s)", items, byteSize(b))
}

// oneLine squeezes an error message onto one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
