package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
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

var (
	// errQuit ends a follower on the user's request.
	errQuit = errors.New("quit")
	// errStreamEnded reports that the region closed the session stream.
	errStreamEnded = errors.New("the region ended the session")
	// errSilent reports a stream that stopped answering pings.
	errSilent = errors.New("no word from the region; the stream looks dead")
)

// follower keeps a Session stream open and prints, in order and once
// each, the messages of the groups it follows; tail and chat are both
// followers. When the stream breaks it reconnects with backoff and fills
// the gap from each group's history.
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

	box     *inbox
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
		box:       newInbox(),
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
		case errors.Is(err, errStreamEnded):
			fmt.Fprintf(f.a.stderr, "roamchat: %s: %v\n", f.op, err)
			return nil
		case !f.started || !retryableStream(err):
			return err
		}
		wait := f.retry.wait()
		if d, ok := retryDelay(err); ok && d > wait {
			wait = d
		}
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
	ctx, cancel := context.WithCancel(ctx)
	stream, err := f.c.api.Session(ctx)
	if err != nil {
		cancel()
		return err
	}
	// roamchat reads Deliveries frames; a region that predates them
	// ignores the frame. On io.EOF the stream has ended, and Recv says why.
	caps := &clientv1.SessionRequest{Kind: &clientv1.SessionRequest_Capabilities{Capabilities: &clientv1.Capabilities{Deliveries: true}}}
	if err := stream.Send(caps); err != nil && !errors.Is(err, io.EOF) {
		cancel()
		return fmt.Errorf("session: capabilities: %w", err)
	}
	events := make(chan *clientv1.SessionResponse)
	recvErr := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case events <- r:
			case <-ctx.Done():
				return
			}
		}
	})
	defer func() {
		cancel()
		wg.Wait()
	}()

	// streamErr is how the stream's end reads: EOF is the region's choice.
	streamErr := func(err error) error {
		if errors.Is(err, io.EOF) {
			return errStreamEnded
		}
		return err
	}

	var readyTimeout <-chan time.Time
	if f.a.timeout > 0 {
		t := time.NewTimer(f.a.timeout)
		defer t.Stop()
		readyTimeout = t.C
	}
	var first *clientv1.SessionResponse
	select {
	case <-ctx.Done():
		return ctx.Err()
	case first = <-events:
	case err := <-recvErr:
		return streamErr(err)
	case <-readyTimeout:
		return fmt.Errorf("session: no Ready from the region within --timeout %s", f.a.timeout)
	}
	ready := first.GetReady()
	if ready == nil {
		return fmt.Errorf("session: the region sent %T before Ready", first.GetKind())
	}
	f.snapshot(ready.GetOnline())
	ack := func(ids []uint64) error {
		if len(ids) == 0 {
			return nil
		}
		err := stream.Send(&clientv1.SessionRequest{Kind: &clientv1.SessionRequest_Ack{Ack: &clientv1.Ack{DeliveryIds: ids}}})
		if err != nil {
			return fmt.Errorf("session: ack: %w", err)
		}
		return nil
	}
	// The stream is up before any history is read, so nothing committed in
	// between is missed; what both bring is printed once.
	if !f.started {
		if err := f.start(ctx, ack); err != nil {
			return err
		}
		f.started = true
	} else {
		// Reconnected: fetch what was committed while the stream was down.
		for _, g := range f.box.followed() {
			if err := f.fill(ctx, g, ack); err != nil {
				return err
			}
		}
	}
	f.retry.reset()

	ping := time.NewTicker(f.pingEvery)
	defer ping.Stop()
	heard := time.Now()
	gap := time.NewTimer(time.Hour)
	gap.Stop()
	gapArmed := false
	var nonce uint64
	for {
		if !gapArmed && len(f.due()) > 0 {
			gap.Reset(f.gapGrace)
			gapArmed = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-recvErr:
			// The receiver hands over every response before its final
			// error, so none is lost to this select.
			return streamErr(err)
		case r := <-events:
			heard = time.Now()
			if err := f.handle(ctx, r, ack); err != nil {
				return err
			}
		case <-ping.C:
			if time.Since(heard) > 2*f.pingEvery+f.a.timeout {
				return fmt.Errorf("session: %w", errSilent)
			}
			nonce++
			if err := stream.Send(&clientv1.SessionRequest{Kind: &clientv1.SessionRequest_Ping{Ping: &clientv1.Ping{Nonce: nonce}}}); err != nil {
				return fmt.Errorf("session: ping: %w", err)
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
		if last, _ := f.box.last(g); last < seq {
			f.fill(ctx, g, ack) // best effort: the follower is ending anyway
		}
	}
	return err
}

// handle acts on one response of the stream.
func (f *follower) handle(ctx context.Context, r *clientv1.SessionResponse, ack func([]uint64) error) error {
	switch k := r.GetKind().(type) {
	case *clientv1.SessionResponse_Delivery:
		return ack(f.live(ctx, k.Delivery, nil))
	case *clientv1.SessionResponse_Deliveries:
		var ids []uint64
		for _, d := range k.Deliveries.GetDeliveries() {
			ids = f.live(ctx, d, ids)
		}
		return ack(ids)
	case *clientv1.SessionResponse_Presence:
		f.presence(k.Presence)
	case *clientv1.SessionResponse_CatchUp:
		g := k.CatchUp.GetGroupId()
		if !f.wants(g) {
			return nil
		}
		f.box.follow(g, k.CatchUp.GetAfterSeq())
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
	ready, a := f.box.add(m, d.GetDeliveryId())
	f.print(ctx, ready)
	return append(ids, a...)
}

func (f *follower) wants(group string) bool {
	return f.only == nil || f.only[group]
}

// due returns the groups whose history should be read now: they hold
// messages beyond a gap, or the user sent one not printed yet.
func (f *follower) due() []string {
	groups := f.box.gaps()
	for g, seq := range f.expect {
		last, _ := f.box.last(g)
		if last >= seq {
			delete(f.expect, g)
		} else if !contains(groups, g) {
			groups = append(groups, g)
		}
	}
	return groups
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// fill reads group's history after the last message printed and prints
// it. A gap that complete reads leave open fillTries times is given up:
// what follows it is printed.
func (f *follower) fill(ctx context.Context, group string, ack func([]uint64) error) error {
	after, _ := f.box.last(group)
	var ids []uint64
	r, err := f.a.history(ctx, f.c, group, after, 0, true, func(m *clientv1.Message) {
		ready, a := f.box.add(m)
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
	ready, ids := f.box.settle(group, max(r.last, r.logLast))
	f.print(ctx, ready)
	if len(ready) == 0 && contains(f.box.gaps(), group) {
		if f.tries[group]++; f.tries[group] >= fillTries {
			fmt.Fprintf(f.a.stderr, "roamchat: %s: %s: messages after #%d are missing from the history; skipping them\n", f.op, f.label(ctx, group), after)
			ready, ids = f.box.settle(group, math.MaxUint64)
			f.print(ctx, ready)
		}
	} else {
		delete(f.tries, group)
	}
	return ack(ids)
}

// drop prints what group holds and stops waiting for its gaps.
func (f *follower) drop(ctx context.Context, group string) []uint64 {
	ready, ids := f.box.settle(group, math.MaxUint64)
	f.print(ctx, ready)
	delete(f.expect, group)
	delete(f.tries, group)
	return ids
}

func (f *follower) print(ctx context.Context, msgs []*clientv1.Message) {
	for _, m := range msgs {
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

// retryableStream reports whether a new stream may cure err.
func retryableStream(err error) bool {
	if _, ok := status.FromError(err); !ok {
		// Not from the region: a stream that went silent or failed to send.
		return !errors.Is(err, context.Canceled)
	}
	switch status.Code(err) {
	case codes.Unauthenticated, codes.PermissionDenied, codes.InvalidArgument,
		codes.Unimplemented, codes.NotFound, codes.FailedPrecondition:
		return false
	}
	return true
}

// retryDelay is the wait a RESOURCE_EXHAUSTED refusal asks for.
func retryDelay(err error) (time.Duration, bool) {
	st, ok := status.FromError(err)
	if !ok {
		return 0, false
	}
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
			return ri.GetRetryDelay().AsDuration(), true
		}
	}
	return 0, false
}
