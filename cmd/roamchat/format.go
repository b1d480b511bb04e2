package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"google.golang.org/protobuf/types/known/timestamppb"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
)

const timeLayout = "2006-01-02 15:04:05 MST"

func formatTime(t time.Time, loc *time.Location) string {
	if t.IsZero() {
		return "-"
	}
	return t.In(loc).Format(timeLayout)
}

func formatTimestamp(ts *timestamppb.Timestamp, loc *time.Location) string {
	if ts == nil {
		return "-"
	}
	return formatTime(ts.AsTime(), loc)
}

// writeFields prints label/value pairs as an aligned list, skipping empty
// values.
func writeFields(w io.Writer, kv ...string) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			continue
		}
		fmt.Fprintf(tw, "%s:\t%s\n", kv[i], clean(kv[i+1]))
	}
	tw.Flush()
}

// printGroup prints a group's data. withID is false when the caller has
// already printed the id on a line of its own.
func printGroup(w io.Writer, g *clientv1.Group, loc *time.Location, withID bool) {
	id := ""
	if withID {
		id = g.GetId()
	}
	notice, noticeBlock := g.GetNotice(), ""
	if strings.ContainsAny(notice, "\r\n") {
		notice, noticeBlock = "", notice
	}
	writeFields(w,
		"id", id,
		"name", g.GetName(),
		"home region", g.GetHomeRegion(),
		"version", strconv.FormatUint(g.GetVersion(), 10),
		"owner", memberName(g, g.GetOwnerId()),
		"created", formatTimestamp(g.GetCreatedAt(), loc),
		"updated", formatTimestamp(g.GetUpdatedAt(), loc),
		"notice", notice,
	)
	if noticeBlock != "" {
		fmt.Fprintln(w, "notice:")
		for l := range strings.Lines(strings.ReplaceAll(noticeBlock, "\r\n", "\n")) {
			fmt.Fprintf(w, "  %s\n", clean(strings.TrimSuffix(l, "\n")))
		}
	}
	if s := g.GetSettings(); len(s) > 0 {
		fmt.Fprintln(w, "settings:")
		tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
		for _, k := range slices.Sorted(maps.Keys(s)) {
			fmt.Fprintf(tw, "  %s\t= %s\n", clean(k), clean(s[k]))
		}
		tw.Flush()
	}
	fmt.Fprintf(w, "members (%d):\n", len(g.GetMembers()))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, m := range g.GetMembers() {
		fmt.Fprintf(tw, "  %s\t%s\thome %s\n", clean(m.GetUsername()), m.GetUserId(), clean(m.GetHomeRegion()))
	}
	tw.Flush()
}

// memberName is "name (id)" when the id is a member, else the id.
func memberName(g *clientv1.Group, id string) string {
	for _, m := range g.GetMembers() {
		if m.GetUserId() == id && m.GetUsername() != "" {
			return m.GetUsername() + " (" + id + ")"
		}
	}
	return id
}

// printGroupTable prints the caller's groups, one a row.
func printGroupTable(w io.Writer, groups []*clientv1.GroupSummary) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tHOME\tMEMBERS\tLAST SEQ\tUNREAD")
	for _, g := range groups {
		unread := uint64(0)
		if g.GetLastSeq() > g.GetReadSeq() {
			unread = g.GetLastSeq() - g.GetReadSeq()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\n",
			g.GetId(), clean(g.GetName()), clean(g.GetHomeRegion()), g.GetMemberCount(), g.GetLastSeq(), unread)
	}
	tw.Flush()
}

// formatLive is how tail and chat print a message:
// "[lobby #12] alice: hello".
func formatLive(groupLabel string, m *clientv1.Message) string {
	return fmt.Sprintf("[%s #%d] %s: %s", clean(groupLabel), m.GetSeq(), clean(senderName(m)), body(m.GetBody()))
}

// formatHistory is how history prints a message:
// "#12 2026-01-02 15:04:05 UTC alice: hello".
func formatHistory(m *clientv1.Message, loc *time.Location) string {
	at := m.GetCommittedAt()
	if at == nil {
		at = m.GetSentAt()
	}
	return fmt.Sprintf("#%d %s %s: %s", m.GetSeq(), formatTimestamp(at, loc), clean(senderName(m)), body(m.GetBody()))
}

func senderName(m *clientv1.Message) string {
	if m.GetSenderName() != "" {
		return m.GetSenderName()
	}
	return m.GetSenderId()
}

// body renders a message body so that it cannot break the line format or
// drive the terminal: continuation lines are indented, and other control
// characters (escape sequences included) are shown escaped.
func body(s string) string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = clean(l)
	}
	return strings.Join(lines, "\n    ")
}

// clean escapes control characters (but tab) in text that came from other
// users or the server.
func clean(s string) string {
	if !strings.ContainsFunc(s, isControl) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if isControl(r) {
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func isControl(r rune) bool {
	return r != '\t' && (unicode.IsControl(r) || r == '\u2028' || r == '\u2029' || unicode.Is(unicode.Bidi_Control, r))
}

// formatPresence is how tail and chat print a presence change:
// "* bob is online (region eu)".
func formatPresence(p *clientv1.Presence) string {
	name := p.GetUsername()
	if name == "" {
		name = p.GetUserId()
	}
	switch {
	case !p.GetOnline():
		return fmt.Sprintf("* %s is offline", clean(name))
	case p.GetRegion() != "":
		return fmt.Sprintf("* %s is online (region %s)", clean(name), clean(p.GetRegion()))
	}
	return fmt.Sprintf("* %s is online", clean(name))
}
