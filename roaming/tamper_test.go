package roaming_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
	"github.com/roamfed/roamfed/internal/stack"
	"github.com/roamfed/roamfed/roaming/resourcepool"
)

// Directions through a tampering relay.
const (
	toDest   = iota // the origin's bytes, on their way to the destination
	fromDest        // the destination's answers, on their way back
)

// tamper is a relaying region gone bad: on the connections it wraps (the
// relay's leg to the destination) it flips one byte of one TLS record
// when armed, in the middle of the body of the next application-data
// record of at least a given size that passes in the armed direction.
type tamper struct {
	armed   [2]atomic.Int64 // smallest record body to flip; 0: not armed
	flipped atomic.Int32
	wrapped atomic.Int32
}

// arm has the next record of at least minBody bytes that passes in dir
// altered.
func (tp *tamper) arm(dir int, minBody int64) { tp.armed[dir].Store(minBody) }

// take disarms dir and says yes if a record of type typ and n body bytes
// is the one to alter.
func (tp *tamper) take(dir int, typ byte, n int) bool {
	min := tp.armed[dir].Load()
	const applicationData = 23 // every record after the ClientHello/ServerHello in TLS 1.3
	if min == 0 || typ != applicationData || int64(n) < min {
		return false
	}
	return tp.armed[dir].CompareAndSwap(min, 0)
}

// dialer dials like net.Dialer, and wraps the connections a relay makes
// to dest on behalf of origin (the dial runs in the Relay call's context).
func (tp *tamper) dialer(origin, dest string) func(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	return func(ctx context.Context, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil || addr != dest {
			return c, err
		}
		method, _ := grpc.Method(ctx)
		md, _ := metadata.FromIncomingContext(ctx)
		if method != roamingv1.BusinessService_Relay_FullMethodName || !slices.Equal(md.Get(resourcepool.RegionMetadataKey), []string{origin}) {
			return c, nil
		}
		tp.wrapped.Add(1)
		return &tamperConn{Conn: c, tp: tp}, nil
	}
}

type tamperConn struct {
	net.Conn
	tp  *tamper
	wmu sync.Mutex
	w   records
	rmu sync.Mutex
	r   records
}

func (c *tamperConn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	out := slices.Clone(b) // b is the caller's
	c.w.scan(out, func(typ byte, n int) bool { return c.tp.take(toDest, typ, n) }, &c.tp.flipped)
	return c.Conn.Write(out)
}

func (c *tamperConn) Read(b []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	n, err := c.Conn.Read(b)
	c.r.scan(b[:n], func(typ byte, n int) bool { return c.tp.take(fromDest, typ, n) }, &c.tp.flipped)
	return n, err
}

// records follows the TLS record layer of one direction of a byte
// stream: 5-byte headers (type, version, length) and bodies.
type records struct {
	hdr  [5]byte
	hdrN int
	size int // body length of the current record
	left int // body bytes of it still to come
	flip int // body offset to flip; -1 for none
}

// scan walks b, the next bytes of the stream, and flips the body byte
// chosen when take said yes to a record's header.
func (r *records) scan(b []byte, take func(typ byte, n int) bool, flipped *atomic.Int32) {
	for i := 0; i < len(b); {
		if r.left == 0 {
			r.hdr[r.hdrN] = b[i]
			r.hdrN++
			i++
			if r.hdrN == len(r.hdr) {
				r.hdrN = 0
				r.size = int(binary.BigEndian.Uint16(r.hdr[3:]))
				r.left = r.size
				r.flip = -1
				if take(r.hdr[0], r.size) {
					r.flip = r.size / 2
				}
			}
			continue
		}
		n := min(len(b)-i, r.left)
		pos := r.size - r.left
		if r.flip >= pos && r.flip < pos+n {
			b[i+r.flip-pos] ^= 0x5a
			flipped.Add(1)
		}
		r.left -= n
		i += n
	}
}

// TestRelayTamperingDetected has the relaying region eu alter the bytes
// of ap's connection to us in flight, once in each direction. Each time
// the receiving end's TLS refuses the record (bad_record_mac), closes the
// connection and counts an integrity failure of the link; no altered byte
// reaches a handler. ap's sends are resent on a new tunnel, traffic
// between eu and us goes on meanwhile, and in the end every message is
// stored once at the home and delivered once, as sent.
func TestRelayTamperingDetected(t *testing.T) {
	tp := &tamper{}
	logs := make(map[string]*logBuffer)
	fed, _ := startFedTweaked(t, true, []string{"ap", "eu", "us"}, func(region string, cfg *stack.Config) {
		logs[region] = &logBuffer{}
		cfg.Logger = slog.New(slog.NewTextHandler(logs[region], &slog.HandlerOptions{Level: slog.LevelWarn}))
		if region != "eu" {
			return
		}
		us, _ := cfg.Federation.Region("us")
		cfg.Dial = tp.dialer("ap", us.RoamingAddr)
	})
	waitMesh(t, fed)
	register(t, fed["ap"], "ann")
	register(t, fed["ap"], "abe")
	register(t, fed["eu"], "eve")
	register(t, fed["us"], "uma")
	ann := login(t, fed["ap"], "ann")
	abe := login(t, fed["ap"], "abe")
	eve := login(t, fed["eu"], "eve")
	uma := login(t, fed["us"], "uma")
	g, err := uma.c.CreateGroup(uma.ctx, &clientv1.CreateGroupRequest{Name: "tamper"})
	if err != nil {
		t.Fatal(err)
	}
	gid := g.GetGroup().GetId()
	for _, u := range []user{ann, abe, eve} {
		if _, err := u.c.JoinGroup(u.ctx, &clientv1.JoinGroupRequest{GroupId: gid}); err != nil {
			t.Fatalf("join: %v", err)
		}
	}
	// abe, in ap, receives everything; us delivers it through eu.
	stream, err := abe.c.Session(abe.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if first, err := stream.Recv(); err != nil || first.GetReady() == nil {
		t.Fatalf("first frame %v, %v; want Ready", first, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := fed["ap"].Roaming().CutLink(ctx, "us", "tamper test"); err != nil {
		t.Fatal(err)
	}
	waitRoute(t, fed["ap"], "us", "eu", 5*time.Second)
	waitRoute(t, fed["us"], "ap", "eu", 5*time.Second)

	var sent []string
	send := func(u user, id, body string, mustCommit bool) {
		t.Helper()
		sctx, scancel := context.WithTimeout(u.ctx, 10*time.Second)
		defer scancel()
		r, err := u.c.SendMessage(sctx, &clientv1.SendMessageRequest{GroupId: gid, ClientMsgId: id, Body: body})
		if err != nil {
			t.Fatalf("send %s: %v", id, err)
		}
		if mustCommit && r.GetState() != clientv1.DeliveryState_DELIVERY_STATE_COMMITTED {
			t.Fatalf("send %s: %v; want committed", id, r.GetState())
		}
		sent = append(sent, body)
	}
	// waitStored polls the home's history until it holds every message
	// sent so far.
	waitStored := func() []*clientv1.Message {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			h, err := uma.c.GetHistory(uma.ctx, &clientv1.GetHistoryRequest{GroupId: gid})
			if err == nil && len(h.GetMessages()) >= len(sent) {
				return h.GetMessages()
			}
			if time.Now().After(deadline) {
				t.Fatalf("home holds %d messages (%v), want %d", len(h.GetMessages()), err, len(sent))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFlipped := func(n int32) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for tp.flipped.Load() < n {
			if time.Now().After(deadline) {
				t.Fatalf("%d records altered, want %d (relay legs wrapped: %d)", tp.flipped.Load(), n, tp.wrapped.Load())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	// ap reaches us through eu, and the tunnel works.
	send(ann, "a0", "through eu, before any tampering", false)
	waitStored()

	// eu alters ap's bytes to us: a record of the 4 KiB message.
	tp.arm(toDest, 2048)
	send(ann, "a1", "altered on the way, then resent: "+strings.Repeat("x", 4096), false)
	for i := range 3 {
		send(eve, fmt.Sprint("e", i), fmt.Sprint("eu to us while ap's tunnel breaks ", i), true)
	}
	waitFlipped(1)
	waitStored()

	// eu alters us's answers to ap.
	tp.arm(fromDest, 1)
	send(ann, "a2", "sent while us's answers are altered", false)
	for i := 3; i < 6; i++ {
		send(eve, fmt.Sprint("e", i), fmt.Sprint("eu to us while ap's tunnel breaks ", i), true)
	}
	waitFlipped(2)
	// And the path works again, once the connection is made anew.
	send(ann, "a3", "through eu, after the tampering", false)
	stored := waitStored()

	// Stored once each, as sent, in sequence.
	var bodies []string
	for i, m := range stored {
		if m.GetSeq() != uint64(i+1) {
			t.Fatalf("message %d has seq %d", i, m.GetSeq())
		}
		bodies = append(bodies, m.GetBody())
	}
	if !sameSet(bodies, sent) {
		t.Fatalf("home stored %q\nsent %q", bodies, sent)
	}
	// Delivered once each, as sent, in order, to abe in ap.
	var delivered []string
	for len(delivered) < len(sent) {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("abe's session after %d deliveries: %v", len(delivered), err)
		}
		d := resp.GetDelivery()
		if d == nil {
			continue
		}
		if d.GetMessage().GetSeq() != uint64(len(delivered)+1) {
			t.Fatalf("delivery %d has seq %d", len(delivered)+1, d.GetMessage().GetSeq())
		}
		delivered = append(delivered, d.GetMessage().GetBody())
		_ = stream.Send(&clientv1.SessionRequest{Kind: &clientv1.SessionRequest_Ack{Ack: &clientv1.Ack{DeliveryIds: []uint64{d.GetDeliveryId()}}}})
	}
	if !slices.Equal(delivered, bodies) {
		t.Fatalf("abe got %q\nstored %q", delivered, bodies)
	}

	// Each alteration was found by the end that read it, and counted once
	// against the other end; eu's own links saw none.
	integrity := func(region, peer string) uint64 {
		for _, p := range fed[region].Roaming().Status() {
			if p.Peer == peer {
				return p.IntegrityFailures
			}
		}
		t.Fatalf("%s has no row for %s", region, peer)
		return 0
	}
	if got := integrity("us", "ap"); got != 1 {
		t.Errorf("us counted %d integrity failures of ap's connections; want 1 (ap's bytes were altered once)", got)
	}
	if got := integrity("ap", "us"); got != 1 {
		t.Errorf("ap counted %d integrity failures of us's connections; want 1 (us's bytes were altered once)", got)
	}
	for region, st := range fed {
		want := uint64(0)
		if region != "eu" {
			want = 1
		}
		if got := st.Roaming().Mesh().IntegrityFailures(); got != want {
			t.Errorf("%s: %d integrity failures in all; want %d", region, got, want)
		}
		// The end that found a bad record said what TLS found, and (ap,
		// which dialed) the route.
		var found []string
		for _, line := range strings.Split(logs[region].String(), "\n") {
			if strings.Contains(line, "link integrity failure") {
				found = append(found, line)
			}
		}
		if len(found) != int(want) {
			t.Errorf("%s logged %d integrity failures; want %d: %q", region, len(found), want, found)
		}
		for _, line := range found {
			if !strings.Contains(line, "bad record MAC") || region == "ap" && !strings.Contains(line, "route=\"via eu\"") {
				t.Errorf("%s: %s; want TLS's bad record MAC (and, at ap, the route via eu)", region, line)
			}
		}
		// The federation's load was far below the per-peer rate limit.
		for _, p := range st.Roaming().Status() {
			if p.RateRefused != 0 {
				t.Errorf("%s refused %d requests of %s by rate", region, p.RateRefused, p.Peer)
			}
		}
	}
}

// logBuffer keeps a region's log lines; it is safe for concurrent use.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// sameSet reports whether a and b hold the same strings, each as often.
func sameSet(a, b []string) bool {
	return slices.Equal(slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b)))
}
