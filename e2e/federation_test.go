package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
)

// TestFederationChat is the cross-region user story on three real regions:
// users homed in ap, eu and us share a group homed in eu, each from their
// own region, and one of the us users roams to ap. Every member follows the
// group on a Session stream at the region it is connected to (and one also
// with roamchat tail) while all of them send at once. Midway, eu, the
// group's home, is restarted with SIGTERM. Sends that fail meanwhile are
// sent again with the same client_msg_id until committed.
//
// Then: the home's log is exactly #1..#N, every acknowledged message once
// at the sequence number it was acknowledged with; every member holds that
// log, in order, once each; the roaming user got messages live at ap and
// reads the history there; group updates made from ap are seen from us
// with their new version.
func TestFederationChat(t *testing.T) {
	t.Parallel()
	// Each of the four members sends perSender messages, N in all. With
	// -race on a loaded 2-core machine the load takes 15-30s.
	const perSender = 200
	start := time.Now()
	phase := func(what string) { t.Logf("[%6.2fs] %s", time.Since(start).Seconds(), what) }

	fed := startFederation(t, "ap", "eu", "us")
	ap, eu, us := fed.Region(t, "ap"), fed.Region(t, "eu"), fed.Region(t, "us")
	phase("three regions serving")

	// Accounts at their homes: alice in ap, bob in eu, carol and dave in us.
	homes := []struct{ name, home string }{{"alice", "ap"}, {"bob", "eu"}, {"carol", "us"}, {"dave", "us"}}
	for _, h := range homes {
		registerAPI(t, fed.Region(t, h.home), h.name)
	}
	alice := loginAPI(t, ap, "alice", "ap")
	bob := loginAPI(t, eu, "bob", "eu")
	carol := loginAPI(t, us, "carol", "us")
	daveUS := loginAPI(t, us, "dave", "us")
	phase("registered and logged in at home")

	// bob creates the group at eu; the others join from their regions.
	lobby := createGroupAPI(t, bob, "lobby")
	probe := createGroupAPI(t, bob, "probe")
	for _, u := range []*apiUser{alice, carol, daveUS} {
		joinAPI(t, u, lobby)
	}
	joinAPI(t, carol, probe)

	// dave, homed in us, roams to ap.
	dave := loginAPI(t, ap, "dave", "us")
	phase("group created at eu, joined from ap and us; dave logged in at ap")

	// carol also follows the group with roamchat at us.
	mustRoamchat(t, us, "carol", "login", "carol", "--password", password("carol"))
	tail := startRoamchat(t, us, "carol", "tail", lobby, probe)
	waitFollowing(t, tail, us, "carol", probe, "probe")

	members := []*apiUser{alice, bob, carol, dave}
	var receivers []*receiver
	for _, u := range members {
		receivers = append(receivers, startReceiver(t, u, lobby))
	}
	for _, r := range receivers {
		if got := r.waitReady(t); got != r.u.at.Name {
			t.Fatalf("%s's Session stream is served by %q, want %q", r.u, got, r.u.at.Name)
		}
	}
	phase("tail and four receivers following")

	// The tail's lines are read as they come, so that it never waits on
	// a full pipe.
	type tailResult struct {
		got []chatLine
		err error
	}
	tailDone := make(chan tailResult, 1)
	go func() {
		var got []chatLine
		deadline := time.Now().Add(4 * time.Minute)
		for len(got) < 4*perSender {
			line, err := tail.Next(time.Until(deadline))
			if err != nil {
				tailDone <- tailResult{got, err}
				return
			}
			if m, ok := parseLiveLine(line); ok && m.group == "lobby" {
				got = append(got, m)
			}
		}
		tailDone <- tailResult{got, nil}
	}()

	// The load: every member sends at once; eu restarts once a third is
	// committed.
	const total = 4 * perSender
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	var committed atomic.Int64
	progress := make(chan struct{}, 1)
	var senders []*sender
	var wg sync.WaitGroup
	for _, u := range members {
		s := newSender(u, lobby, perSender)
		senders = append(senders, s)
		wg.Go(func() {
			s.run(ctx, func() {
				committed.Add(1)
				select {
				case progress <- struct{}{}:
				default:
				}
			})
		})
	}
	sendersDone := make(chan struct{})
	go func() { wg.Wait(); close(sendersDone) }()
	t.Cleanup(func() { cancel(); <-sendersDone })
	phase("load started")

	// While the load runs: a group update from ap is seen from us.
	checkUpdateSeen(t, alice, carol, lobby, "notice before the restart")

	waitCommitted := func(n int64) {
		t.Helper()
		for committed.Load() < n {
			select {
			case <-progress:
			case <-sendersDone:
				t.Fatalf("the senders stopped after %d of %d commits", committed.Load(), total)
			case <-ctx.Done():
				t.Fatalf("%d of %d messages committed before the deadline", committed.Load(), total)
			}
		}
	}
	waitCommitted(total / 3)
	before := committed.Load()
	phase(fmt.Sprintf("%d committed; restarting eu", before))
	restartStart := time.Now()
	eu.Restart(t)
	restartedAt := committed.Load()
	phase(fmt.Sprintf("eu back after %s; %d committed meanwhile (by the outbox at ap and us draining as eu returned, or acknowledged just before SIGTERM)",
		time.Since(restartStart).Round(time.Millisecond), restartedAt-before))

	// After the restart too, and while the load goes on.
	checkUpdateSeen(t, alice, carol, lobby, "notice after the restart")

	select {
	case <-sendersDone:
	case <-ctx.Done():
		t.Fatalf("the senders did not finish: %d of %d messages committed", committed.Load(), total)
	}
	phase(fmt.Sprintf("load done: %d committed", committed.Load()))
	failed := false
	for _, s := range senders {
		t.Log(s.summary())
		if s.err != nil {
			t.Error(s.err)
			failed = true
		}
	}
	if failed {
		t.FailNow()
	}
	if committed.Load()-restartedAt == 0 {
		t.Errorf("no message was committed after eu came back: the restart was not mid-load")
	}

	// The home's log: exactly #1..#N, each acknowledged message once, at
	// its acknowledged sequence number.
	home, err := bob.history(ctx, lobby, 0)
	if err != nil {
		t.Fatal(err)
	}
	checkHomeLog(t, home, senders, total)
	phase("home log checked")

	// Every member holds the home's log, in order, once each.
	for _, r := range receivers {
		r.waitHeld(t, total, 45*time.Second)
	}
	for _, r := range receivers {
		r.check(t, home)
		t.Logf("%s's receiver: %+v; streams ended: %q", r.u, r.Stats(), r.Breaks())
	}
	phase("every receiver holds the log")

	// dave, roaming at ap, got messages live there, and reads the history
	// there.
	if st := receivers[3].Stats(); st.Live == 0 {
		t.Errorf("dave at ap got no message live: %+v", st)
	}
	daveHist, err := dave.history(ctx, lobby, 0)
	if err != nil {
		t.Fatal(err)
	}
	sameLog(t, "dave's history at ap", daveHist, home)
	checkListed(t, dave, lobby, uint64(total))

	// And roamchat tail printed every message once, in order.
	var tr tailResult
	select {
	case tr = <-tailDone:
	case <-time.After(45 * time.Second):
		t.Fatalf("roamchat tail did not print %d messages of lobby within 45s of the others", total)
	}
	if tr.err != nil {
		t.Fatalf("roamchat tail printed %d of %d messages of lobby: %v", len(tr.got), total, tr.err)
	}
	for i, m := range tr.got {
		w := home[i]
		if m.seq != w.GetSeq() || m.body != w.GetBody() {
			t.Errorf("tail printed #%d %s: %q as message %d, want #%d %q", m.seq, m.sender, m.body, i+1, w.GetSeq(), w.GetBody())
		}
	}
	tail.Stop(t)
	if n := len(parseLive(t, tail.Output(), "lobby")); n != total {
		t.Errorf("roamchat tail printed %d messages of lobby in all, want %d", n, total)
	}
	phase("tail printed the log")
}

// createGroupAPI creates a group homed in u's region and returns its id.
func createGroupAPI(t *testing.T, u *apiUser, name string) string {
	t.Helper()
	var resp *clientv1.CreateGroupResponse
	err := retry(t.Context(), func(ctx context.Context) (err error) {
		resp, err = u.api.CreateGroup(u.auth(ctx), &clientv1.CreateGroupRequest{Name: name})
		return err
	})
	if err != nil {
		t.Fatalf("create group %s as %s: %v", name, u, err)
	}
	if got := resp.GetGroup().GetHomeRegion(); got != u.at.Name {
		t.Fatalf("group %s created at %s is homed in %q", name, u.at.Name, got)
	}
	return resp.GetGroup().GetId()
}

// joinAPI has u join a group from the region u is logged in at.
func joinAPI(t *testing.T, u *apiUser, group string) {
	t.Helper()
	err := retry(t.Context(), func(ctx context.Context) error {
		_, err := u.api.JoinGroup(u.auth(ctx), &clientv1.JoinGroupRequest{GroupId: group})
		return err
	})
	if err != nil {
		t.Fatalf("%s joins %s: %v", u, group, err)
	}
}

// checkUpdateSeen has writer change the group's notice, and checks that
// reader, at another region, then reads the new notice and version.
func checkUpdateSeen(t *testing.T, writer, reader *apiUser, group, notice string) {
	t.Helper()
	var up *clientv1.UpdateGroupResponse
	err := retry(t.Context(), func(ctx context.Context) (err error) {
		up, err = writer.api.UpdateGroup(writer.auth(ctx), &clientv1.UpdateGroupRequest{GroupId: group, Notice: &notice})
		return err
	})
	if err != nil {
		t.Fatalf("update of %s from %s: %v", group, writer, err)
	}
	if up.GetGroup().GetNotice() != notice || up.GetGroup().GetHomeRegion() != "eu" {
		t.Fatalf("update of %s from %s answered %v", group, writer, up.GetGroup())
	}
	var got *clientv1.GetGroupResponse
	err = retry(t.Context(), func(ctx context.Context) (err error) {
		got, err = reader.api.GetGroup(reader.auth(ctx), &clientv1.GetGroupRequest{GroupId: group})
		return err
	})
	if err != nil {
		t.Fatalf("get %s from %s: %v", group, reader, err)
	}
	if g := got.GetGroup(); g.GetVersion() != up.GetGroup().GetVersion() || g.GetNotice() != notice {
		t.Errorf("%s reads %s at version %d with notice %q; the update from %s made version %d with %q",
			reader, group, g.GetVersion(), g.GetNotice(), writer, up.GetGroup().GetVersion(), notice)
	}
	t.Logf("update from %s: version %d, seen from %s", writer, up.GetGroup().GetVersion(), reader)
}

// checkHomeLog checks the group's log at its home against what the senders
// were told: #1..#total in order, every acknowledged message exactly once
// and at the sequence number its sender was given, each sender's messages
// in the order sent, and nothing else.
func checkHomeLog(t *testing.T, log []*clientv1.Message, senders []*sender, total int) {
	t.Helper()
	if len(log) != total {
		t.Errorf("the home's log has %d messages, want %d", len(log), total)
	}
	byKey := make(map[string]*clientv1.Message) // sender id / client_msg_id
	for i, m := range log {
		if m.GetSeq() != uint64(i+1) {
			t.Errorf("the home's log has #%d at position %d", m.GetSeq(), i+1)
		}
		k := m.GetSenderId() + "/" + m.GetClientMsgId()
		if o, dup := byKey[k]; dup {
			t.Errorf("the home's log holds client_msg_id %s of %s twice: #%d and #%d", m.GetClientMsgId(), m.GetSenderName(), o.GetSeq(), m.GetSeq())
		}
		byKey[k] = m
	}
	acked := 0
	for _, s := range senders {
		var last uint64
		for _, a := range s.acks {
			acked++
			m, ok := byKey[s.u.id+"/"+a.clientMsgID]
			switch {
			case !ok:
				t.Errorf("%s's %s, acknowledged as #%d, is not in the home's log", s.u, a.clientMsgID, a.seq)
				continue
			case m.GetSeq() != a.seq || m.GetBody() != a.body:
				t.Errorf("%s's %s was acknowledged as #%d %q; the home's log has it as #%d %q", s.u, a.clientMsgID, a.seq, a.body, m.GetSeq(), m.GetBody())
			case m.GetMessageId() != a.messageID:
				t.Errorf("%s's %s was acknowledged with message id %s; the home's log has %s", s.u, a.clientMsgID, a.messageID, m.GetMessageId())
			}
			if m.GetSeq() <= last {
				t.Errorf("%s's %s is #%d, after its previous message at #%d", s.u, a.clientMsgID, m.GetSeq(), last)
			}
			last = m.GetSeq()
		}
	}
	if acked != len(byKey) {
		t.Errorf("the home's log holds %d distinct messages; %d were acknowledged", len(byKey), acked)
	}
}

// sameLog checks that got is want: the same messages in the same order.
func sameLog(t *testing.T, what string, got, want []*clientv1.Message) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d messages, want %d", what, len(got), len(want))
	}
	for i := range min(len(got), len(want)) {
		if g, w := got[i], want[i]; g.GetSeq() != w.GetSeq() || g.GetMessageId() != w.GetMessageId() {
			t.Errorf("%s: message %d is #%d %s, want #%d %s", what, i+1, g.GetSeq(), g.GetMessageId(), w.GetSeq(), w.GetMessageId())
			return
		}
	}
}

// checkListed checks that u's groups, listed at u's region, include group
// with its latest sequence number lastSeq.
func checkListed(t *testing.T, u *apiUser, group string, lastSeq uint64) {
	t.Helper()
	var resp *clientv1.ListGroupsResponse
	err := retry(t.Context(), func(ctx context.Context) (err error) {
		resp, err = u.api.ListGroups(u.auth(ctx), &clientv1.ListGroupsRequest{})
		return err
	})
	if err != nil {
		t.Fatalf("list groups as %s: %v", u, err)
	}
	var listed []string
	for _, g := range resp.GetGroups() {
		if g.GetId() == group {
			if g.GetLastSeq() != lastSeq || g.GetHomeRegion() != "eu" {
				t.Errorf("%s lists %s homed in %q at #%d, want eu at #%d", u, group, g.GetHomeRegion(), g.GetLastSeq(), lastSeq)
			}
			return
		}
		listed = append(listed, g.GetId())
	}
	t.Errorf("%s's groups [%s] lack %s", u, strings.Join(listed, " "), group)
}
