package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	"github.com/roamfed/roamfed/internal/clientkit"
)

// Tuning of a follower.
const (
	defaultPingEvery = 30 * time.Second
	// defaultGapGrace is how long a gap may stay open before its history
	// is fetched: a delivery overtaken by the next one usually arrives
	// within it.
	defaultGapGrace = 500 * time.Millisecond
	// fillTries is how many complete history reads may leave a gap open
	// before the follower gives up waiting for it and prints past it.
	fillTries = 3
)

// errQuit ends a follower on the user's request.
var errQuit = errors.New("quit")

// follower keeps a Session stream open and prints, in order and once
// each, the messages of the groups it follows; tail and chat are both
// followers. When the stream breaks it reconnects with backoff and fills
// the gap from each group's history. The stream and the ordering are
// clientkit's (Stream, Inbox); what to print, when to give up and how to
// say so are roamchat's, which is why it is not a clientkit.Follower.
//
// A follower is used by one goroutine; it owns the stream's receiving
// goroutine and stops it before run returns.
type follower struct {
	a  *app
	c  *conn
	op string // for messages: "tail", "chat"

	// only holds the groups to print; nil prints every group.
	only map[string]bool
	// start runs once, when the first stream is ready, to choose where each
	// group starts and print what should come first (tail: nothing, from
	// each group's latest message on; chat: the last 20 messages). Deliveries
	// wait meanwhile; ack acknowledges any it releases.
	start func(ctx context.Context, ack func([]uint64) error) error
	// lines, if not nil, are the user's input; onLine handles each, and
	// errQuit from it ends the follower. A closed channel ends it too.
	lines  <-chan string
	onLine func(ctx context.Context, line string) error

	pingEvery time.Duration
	gapGrace  time.Duration
	retry     backoff

	box     *clientkit.Inbox
	labels  map[string]string // group id -> name, "" when unknown
	online  map[string]*clientv1.Presence
	expect  map[string]uint64 // group -> seq known committed, maybe not yet printed
	tries   map[string]int    // group -> history reads that left a gap open
	started bool
}

func (a *app) newFollower(c *conn, op string) *follower {
	return &follower{
		a:         a,
		c:         c,
		op:        op,
		pingEvery: defaultPingEvery,
		gapGrace:  defaultGapGrace,
		retry:     backoff{min: 250 * time.Millisecond, max: 15 * time.Second},
		box:       clientkit.NewInbox(),
		labels:    make(map[string]string),
		online:    make(map[string]*clientv1.Presence),
		expect:    make(map[string]uint64),
		tries:     make(map[string]int),
	}
}

// run follows until ctx is done, the region ends the stream, the input
// ends, or an error that a new stream would not cure. A first stream that
// fails ends it too: the region is wrong or down, and the user should know
// now rather than watch retries.
func (f *follower) run(ctx context.Context) error {
	for {
		err := f.runStream(ctx)
		switch {
		case ctx.Err() != nil, errors.Is(err, errQuit):
			return nil
		case errors.Is(err, clientkit.ErrSessionEnded):
			fmt.Fprintf(f.a.stderr, "roamchat: %s: %v\n", f.op, err)
			return nil
		case !f.started || !clientkit.Retryable(err):
			return err
		}
		wait := clientkit.RetryWait(err, f.retry.wait())
		fmt.Fprintf(f.a.stderr, "roamchat: %s: stream broken: %s; reconnecting in %s\n", f.op, f.a.describe(err), wait.Round(time.Millisecond))
		if err := f.pause(ctx, wait); err != nil {
			return nil
		}
	}
}

// pause waits d, still taking the user's input, so that /quit works while
// the region is away. It returns an error when the follower should end.
func (f *follower) pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			return nil
		case line, ok := <-f.lines:
			if !ok {
				return errQuit
			}
			if err := f.onLine(ctx, line); err != nil {
				return err
			}
		}
	}
}

// runStream runs one Session stream to its end.
func (f *follower) runStream(ctx context.Context) error {
	s, ready, err := clientkit.OpenStream(ctx, f.c.api, f.a.timeout)
	if err != nil {
		return f.sessionErr(err)
	}
	defer s.Close()
	f.snapshot(ready.GetOnline())
	ack := func(ids []uint64) error { return f.sessionErr(s.Ack(ids)) }
	// The stream is up before any history is read, so nothing committed in
	// between is missed; what both bring is printed once.
	if !f.started {
		if err := f.start(ctx, ack); err != nil {
			return err
		}
		f.started = true
	} else {
		// Reconnected: fetch what was committed while the stream was down.
		for _, g := range f.box.Followed() {
			if err := f.fill(ctx, g, ack); err != nil {
				return err
			}
		}
	}
	f.retry.reset()

	ping := time.NewTicker(f.pingEvery)
	defer ping.Stop()
	gap := time.NewTimer(time.Hour)
	gap.Stop()
	gapArmed := false
	for {
		if !gapArmed && len(f.due()) > 0 {
			gap.Reset(f.gapGrace)
			gapArmed = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-s.Ended():
			// The stream hands over every frame before its end, so none
			// is lost to this select.
			return err
		case r := <-s.Frames():
			if err := f.handle(ctx, r, ack); err != nil {
				return err
			}
		case <-ping.C:
			if err := s.Ping(2*f.pingEvery + f.a.timeout); err != nil {
				return f.sessionErr(err)
			}
		case <-gap.C:
			gapArmed = false
			for _, g := range f.due() {
				if err := f.fill(ctx, g, ack); err != nil {
					return err
				}
			}
		case line, ok := <-f.lines:
			if !ok {
				return f.finish(ctx, ack, errQuit)
			}
			if err := f.onLine(ctx, line); err != nil {
				return f.finish(ctx, ack, err)
			}
		}
	}
}

// finish prints the user's own messages that are committed but not yet
// printed before the follower ends with err.
func (f *follower) finish(ctx context.Context, ack func([]uint64) error, err error) error {
	for g, seq := range f.expect {
		if f.box.Last(g) < seq {
			f.fill(ctx, g, ack) // best effort: the follower is ending anyway
		}
	}
	return err
}

// handle acts on one response of the stream.
func (f *follower) handle(ctx context.Context, r *clientv1.SessionResponse, ack func([]uint64) error) error {
	if ds := clientkit.Deliveries(r); len(ds) > 0 {
		var ids []uint64
		for _, d := range ds {
			ids = f.live(ctx, d, ids)
		}
		return ack(ids)
	}
	switch k := r.GetKind().(type) {
	case *clientv1.SessionResponse_Presence:
		f.presence(k.Presence)
	case *clientv1.SessionResponse_CatchUp:
		g := k.CatchUp.GetGroupId()
		if !f.wants(g) {
			return nil
		}
		f.box.Follow(g, k.CatchUp.GetAfterSeq())
		return f.fill(ctx, g, ack)
	case *clientv1.SessionResponse_Ready:
		f.snapshot(k.Ready.GetOnline())
	}
	return nil
}

// live prints what one delivery makes ready and returns ids with the
// deliveries to acknowledge now appended.
func (f *follower) live(ctx context.Context, d *clientv1.Delivery, ids []uint64) []uint64 {
	m := d.GetMessage()
	if !f.wants(m.GetGroupId()) {
		// Not acknowledged: this client did not show it, and an
		// acknowledgement would mark it read.
		return ids
	}
	ready, a := f.add(m, clientkit.Live, d.GetDeliveryId())
	f.print(ctx, ready)
	return append(ids, a...)
}

// add puts m in the inbox. A group not followed yet, one joined after the
// start say, is followed from this message on rather than its first.
func (f *follower) add(m *clientv1.Message, src clientkit.Source, deliveries ...uint64) ([]clientkit.Released, []uint64) {
	if m.GetSeq() > 0 {
		f.box.Follow(m.GetGroupId(), m.GetSeq()-1)
	}
	return f.box.Add(m, src, deliveries...)
}

func (f *follower) wants(group string) bool {
	return f.only == nil || f.only[group]
}

// due returns the groups whose history should be read now: they hold
// messages beyond a gap, or the user sent one not printed yet.
func (f *follower) due() []string {
	groups := f.box.Gapped()
	for g, seq := range f.expect {
		if f.box.Last(g) >= seq {
			delete(f.expect, g)
		} else if !slices.Contains(groups, g) {
			groups = append(groups, g)
		}
	}
	return groups
}

// fill reads group's history after the last message printed and prints
// it. A gap that complete reads leave open fillTries times is given up:
// what follows it is printed.
func (f *follower) fill(ctx context.Context, group string, ack func([]uint64) error) error {
	after := f.box.Last(group)
	var ids []uint64
	r, err := f.a.history(ctx, f.c, group, after, 0, true, func(m *clientv1.Message) {
		ready, a := f.add(m, clientkit.History)
		f.print(ctx, ready)
		ids = append(ids, a...)
	})
	if err := ack(ids); err != nil {
		return err
	}
	switch status.Code(err) {
	case codes.OK:
	case codes.PermissionDenied, codes.NotFound:
		// Left or lost the group: say so, and keep following the others.
		fmt.Fprintf(f.a.stderr, "roamchat: %s: %s: %s\n", f.op, f.label(ctx, group), f.a.describe(err))
		return ack(f.drop(ctx, group))
	default:
		return err
	}
	ready, ids := f.box.Settle(group, max(r.last, r.logLast))
	f.print(ctx, ready)
	if len(ready) == 0 && slices.Contains(f.box.Gapped(), group) {
		if f.tries[group]++; f.tries[group] >= fillTries {
			fmt.Fprintf(f.a.stderr, "roamchat: %s: %s: messages after #%d are missing from the history; skipping them\n", f.op, f.label(ctx, group), after)
			ready, ids = f.box.Settle(group, math.MaxUint64)
			f.print(ctx, ready)
		}
	} else {
		delete(f.tries, group)
	}
	return ack(ids)
}

// drop prints what group holds and stops waiting for its gaps.
func (f *follower) drop(ctx context.Context, group string) []uint64 {
	ready, ids := f.box.Settle(group, math.MaxUint64)
	f.print(ctx, ready)
	delete(f.expect, group)
	delete(f.tries, group)
	return ids
}

func (f *follower) print(ctx context.Context, msgs []clientkit.Released) {
	for _, r := range msgs {
		m := r.Message
		fmt.Fprintln(f.a.stdout, formatLive(f.label(ctx, m.GetGroupId()), m))
	}
}

// label is the group's name, or its id while the name is unknown.
func (f *follower) label(ctx context.Context, group string) string {
	name, ok := f.labels[group]
	if !ok {
		// Asked once: a group joined after the start, say.
		cctx, cancel := f.a.callCtx(ctx)
		resp, err := f.c.api.GetGroup(cctx, &clientv1.GetGroupRequest{GroupId: group})
		cancel()
		if err == nil {
			name = resp.GetGroup().GetName()
		}
		f.labels[group] = name
	}
	if name == "" {
		return group
	}
	return name
}

// presence prints a change of a user's presence.
func (f *follower) presence(p *clientv1.Presence) {
	was, known := f.online[p.GetUserId()]
	if known && was.GetOnline() == p.GetOnline() && was.GetRegion() == p.GetRegion() {
		return
	}
	if !known && !p.GetOnline() {
		f.online[p.GetUserId()] = p
		return // offline, as far as this client knew
	}
	f.online[p.GetUserId()] = p
	fmt.Fprintln(f.a.stdout, formatPresence(p))
}

// snapshot takes the list of online users a Ready carries: who is in it
// is online, who is not went offline while the stream was down.
func (f *follower) snapshot(online []*clientv1.Presence) {
	now := make(map[string]bool, len(online))
	for _, p := range online {
		now[p.GetUserId()] = true
		f.presence(p)
	}
	for id, p := range f.online {
		if p.GetOnline() && !now[id] {
			f.presence(&clientv1.Presence{UserId: id, Username: p.GetUsername(), Online: false})
		}
	}
}

// sessionErr words a failure on this side of the stream as roamchat
// always has ("session: ack: EOF"); the region's answers, the stream's end
// and the caller's cancellation pass as they are.
func (f *follower) sessionErr(err error) error {
	if err == nil {
		return nil
	}
	_, fromRegion := err.(interface{ GRPCStatus() *status.Status })
	switch {
	case fromRegion, errors.Is(err, clientkit.ErrSessionEnded), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.Is(err, clientkit.ErrNoReady):
		return fmt.Errorf("session: %w within --timeout %s", clientkit.ErrNoReady, f.a.timeout)
	}
	return fmt.Errorf("session: %w", err)
}
