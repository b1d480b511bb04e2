package e2e

import (
	"testing"
	"time"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
)

// The drills of DESIGN.md flows 6 and 7 on real regiond processes: three
// regions, ap, eu and us, each homing two users and a group whose members
// are all six users; every user follows its groups on a Session stream at
// its own region and sends to them round the clock (drill_helpers_test.go
// says how much). A link fails in the middle of the load, in one of four
// ways; then it heals, the load stops, and once everything has settled
// the checker must find no message lost, duplicated or out of order: each
// member holds every acknowledged message of each group once, at seqs
// 1..N, and each group's home holds that log.
//
// The drills run one after another, not in parallel, so that the
// detection times they measure and assert are not those of a machine
// running a dozen regions at once.

// How long each phase of a drill lasts.
const (
	drillWarmup    = 1500 * time.Millisecond // load before the fault
	drillFault     = 3 * time.Second         // load during it
	drillAfterHeal = 1500 * time.Millisecond // load after the heal
	// drillDetect is how soon a silently dead link must be seen down:
	// three missed heartbeats of 200ms, each timing out after 300ms, and
	// room for a loaded machine.
	drillDetect = 1500 * time.Millisecond
)

const (
	drillStateDown = roamingv1.LinkState_LINK_STATE_DOWN
	drillStateCut  = roamingv1.LinkState_LINK_STATE_CUT
)

// TestDrillCutLink (drill a) cuts eu–us with eu's admin CutLink: both ends
// see it cut at once, traffic between them goes through ap, and everything
// is still delivered; after RestoreLink the direct link is used again.
func TestDrillCutLink(t *testing.T) {
	needBinaries(t)
	clk := newDrillClock(t)
	fed := startDrillFederation(t, allocDrillAddrs(t), nil)
	clk.phase("ap, eu and us serving; every link up and direct")
	fl := newDrillFleet(t, fed)
	clk.phase("%d users and %d groups; every member following", len(fl.users), len(fl.groups))
	load := fl.startLoad(t)
	time.Sleep(drillWarmup)
	relays := fed.relaysCarried(t, "ap")

	cutAt := time.Now()
	fed.drill(t, "eu", "cut", "eu", "us")
	detect := max(
		fed.waitLink(t, cutAt, "eu", "us", "cut", drillLinkIs(drillStateCut), 5*time.Second),
		fed.waitLink(t, cutAt, "us", "eu", "cut", drillLinkIs(drillStateCut), 5*time.Second))
	route := max(
		fed.waitLink(t, cutAt, "eu", "us", "routed via ap", drillLinkVia("ap"), 5*time.Second),
		fed.waitLink(t, cutAt, "us", "eu", "routed via ap", drillLinkVia("ap"), 5*time.Second))
	clk.phase("eu–us cut at eu: both ends see it cut %s after, and route via ap %s after", drillMS(detect), drillMS(route))
	time.Sleep(time.Until(cutAt.Add(drillFault)))

	// Still cut and through ap (a link to ap that a loaded machine
	// flapped gets a moment to come back), and ap did carry traffic.
	across := fed.checkFaultViaAP(t, fl, cutAt, "cut", "cut", drillStateCut, relays)

	restoreAt := time.Now()
	fed.drill(t, "eu", "restore", "eu", "us")
	heal := max(
		fed.waitLink(t, restoreAt, "eu", "us", "up and direct", drillLinkDirect, 10*time.Second),
		fed.waitLink(t, restoreAt, "us", "eu", "up and direct", drillLinkDirect, 10*time.Second))
	clk.phase("eu–us restored: up and direct at both ends %s after", drillMS(heal))
	time.Sleep(drillAfterHeal)
	load.Stop()
	clk.phase("load stopped")
	settled := fl.settle(t)
	clk.phase("settled in %s", drillMS(settled))
	fed.logLinkChanges(t)
	fl.check(t)
	clk.phase("checked")
	t.Logf("drill a (CutLink eu-us): detect %s (both ends cut), reroute %s (both ends via ap), first message across eu–us delivered %s after the cut, heal %s, settle %s",
		drillMS(detect), drillMS(route), drillMS(across.Sub(cutAt)), drillMS(heal), drillMS(settled))
}

// TestDrillIsolateRegion (drill b) cuts both of us's links. us users go on
// chatting in the us-homed group, their sends committed at once; their
// sends to groups homed elsewhere are answered accepted, and once the
// links are restored each is committed at its home, and its sender's
// session gets a Receipt that says so.
func TestDrillIsolateRegion(t *testing.T) {
	needBinaries(t)
	clk := newDrillClock(t)
	fed := startDrillFederation(t, allocDrillAddrs(t), nil)
	clk.phase("ap, eu and us serving; every link up and direct")
	fl := newDrillFleet(t, fed)
	clk.phase("%d users and %d groups; every member following", len(fl.users), len(fl.groups))
	load := fl.startLoad(t)
	time.Sleep(drillWarmup)

	cutAt := time.Now()
	fed.drill(t, "us", "cut", "us", "ap")
	fed.drill(t, "us", "cut", "us", "eu")
	var detect time.Duration
	for _, end := range [][2]string{{"us", "ap"}, {"us", "eu"}, {"ap", "us"}, {"eu", "us"}} {
		detect = max(detect, fed.waitLink(t, cutAt, end[0], end[1], "cut", drillLinkIs(drillStateCut), 5*time.Second))
	}
	for _, peer := range []string{"ap", "eu"} {
		fed.waitLink(t, cutAt, "us", peer, "without a route", drillLinkNoRoute, 5*time.Second)
	}
	isolatedAt := time.Now()
	clk.phase("us cut off from ap and eu: every end sees it cut %s after", drillMS(detect))
	time.Sleep(drillFault)
	fed.logLinks(t, "at the end of the isolation")

	restoreAt := time.Now()
	fed.drill(t, "us", "restore", "us", "ap")
	fed.drill(t, "us", "restore", "us", "eu")
	heal := fed.waitAllDirect(t, restoreAt, 10*time.Second)
	clk.phase("restored: every link up and direct %s after", drillMS(heal))
	time.Sleep(drillAfterHeal)
	load.Stop()
	clk.phase("load stopped")
	settled := fl.settle(t)
	clk.phase("settled in %s", drillMS(settled))
	fed.logLinkChanges(t)
	fl.check(t)
	clk.phase("checked")

	// The sends of us users made and answered while us was cut off.
	during := fl.sendsWhere(func(s *drillSend) bool {
		return s.user.region == "us" && s.resp != nil && s.first.After(isolatedAt) && s.answered.Before(restoreAt)
	})
	var local, remote int
	for _, s := range during {
		state := s.resp.GetState()
		if s.group.home == "us" {
			local++
			if state != clientv1.DeliveryState_DELIVERY_STATE_COMMITTED {
				t.Errorf("%s → %s (homed in us) %s during the isolation: answered %s, want committed", s.user, s.group.name, s.cmid, state)
			}
			continue
		}
		remote++
		if state != clientv1.DeliveryState_DELIVERY_STATE_ACCEPTED {
			t.Errorf("%s → %s (homed in %s) %s during the isolation: answered %s, want accepted", s.user, s.group.name, s.group.home, s.cmid, state)
		}
	}
	if local == 0 || remote == 0 {
		t.Errorf("us users made %d sends to us-homed and %d to other groups during the isolation; want some of each", local, remote)
	}
	// Every accepted message, from any region, got its receipt once
	// committed, and is in its home's log where the receipt says.
	accepted := fl.sendsWhere(func(s *drillSend) bool {
		return s.resp.GetState() == clientv1.DeliveryState_DELIVERY_STATE_ACCEPTED
	})
	fl.checkReceipts(t, accepted)
	t.Logf("drill b (us cut off): detect %s, heal %s, settle %s; during the isolation us users had %d sends committed locally and %d accepted for eu and ap; %d accepted messages in all, each committed with a receipt",
		drillMS(detect), drillMS(heal), drillMS(settled), local, remote, len(accepted))
}

// TestDrillKillRegion (drill c) kills eu with SIGKILL under load, twice,
// and restarts it on the same data directory each time: first in the
// middle of the load, then while eu is cut off from ap and us with
// messages its users sent to groups homed there accepted in its durable
// outbox. No acknowledged message is lost: what eu committed before a
// crash is in its log, what eu accepted before the second crash is
// committed at ap and us after it, what ap and us accepted for eu while it
// was away is committed once it is back, and sends that failed meanwhile
// are sent again and committed once.
func TestDrillKillRegion(t *testing.T) {
	needBinaries(t)
	clk := newDrillClock(t)
	fed := startDrillFederation(t, allocDrillAddrs(t), nil)
	eu := fed.regions["eu"]
	clk.phase("ap, eu and us serving; every link up and direct")
	fl := newDrillFleet(t, fed)
	clk.phase("%d users and %d groups; every member following", len(fl.users), len(fl.groups))
	load := fl.startLoad(t)
	time.Sleep(drillWarmup)

	// 1: killed in the middle of the load.
	killAt := time.Now()
	eu.Kill(t)
	detect := max(
		fed.waitLink(t, killAt, "ap", "eu", "down", drillLinkIs(drillStateDown), 5*time.Second),
		fed.waitLink(t, killAt, "us", "eu", "down", drillLinkIs(drillStateDown), 5*time.Second))
	clk.phase("eu killed; ap and us see it down %s after", drillMS(detect))
	time.Sleep(time.Until(killAt.Add(drillWarmup)))
	restartAt := time.Now()
	eu.Restart(t)
	serving := time.Since(restartAt)
	heal := fed.waitAllDirect(t, restartAt, drillLinksUp)
	clk.phase("eu restarted: serving %s after, every link up and direct %s after", drillMS(serving), drillMS(heal))
	time.Sleep(drillWarmup)

	// 2: killed while cut off, with accepted messages in its outbox.
	cutAt := time.Now()
	fed.drill(t, "eu", "cut", "eu", "ap")
	fed.drill(t, "eu", "cut", "eu", "us")
	isolatedAt := time.Now()
	var held uint64
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n uint64
		if st, err := fed.status(t.Context(), "eu"); err == nil {
			for _, l := range st.GetLinks() {
				n += l.GetOutboxItems()
			}
		}
		accepted := fl.sendsWhere(func(s *drillSend) bool {
			return s.user.region == "eu" && s.first.After(isolatedAt) && s.resp.GetState() == clientv1.DeliveryState_DELIVERY_STATE_ACCEPTED
		})
		if n > 0 && len(accepted) >= 5 {
			held = n
			break
		}
		if time.Now().After(deadline) {
			fed.logLinks(t, "while eu was cut off")
			t.Fatalf("eu cut off for %s: %d outbox entries, %d sends of eu users answered accepted; want some of each", time.Since(cutAt).Round(time.Millisecond), n, len(accepted))
		}
		time.Sleep(50 * time.Millisecond)
	}
	kill2At := time.Now()
	eu.Kill(t)
	acceptedAtEU := fl.sendsWhere(func(s *drillSend) bool {
		return s.user.region == "eu" && s.resp.GetState() == clientv1.DeliveryState_DELIVERY_STATE_ACCEPTED && s.answered.Before(kill2At)
	})
	clk.phase("eu cut off from ap and us, then killed %s after the cut with %d entries in its outbox; %d sends of its users answered accepted", drillMS(kill2At.Sub(cutAt)), held, len(acceptedAtEU))
	time.Sleep(500 * time.Millisecond)
	restart2At := time.Now()
	eu.Restart(t)
	serving2 := time.Since(restart2At)
	// A drill is not kept across a restart: eu comes back with its side
	// whole; ap and us still have theirs cut.
	fed.drill(t, "ap", "restore", "ap", "eu")
	fed.drill(t, "us", "restore", "us", "eu")
	heal2 := fed.waitAllDirect(t, restart2At, drillLinksUp)
	clk.phase("eu restarted: serving %s after, ap and us restored their side, every link up and direct %s after", drillMS(serving2), drillMS(heal2))

	time.Sleep(drillAfterHeal)
	load.Stop()
	clk.phase("load stopped")
	settled := fl.settle(t)
	clk.phase("settled in %s", drillMS(settled))
	fed.logLinkChanges(t)
	// Every acknowledged message at its acknowledged seq, in every
	// history, including those eu accepted before its second crash.
	fl.check(t)
	clk.phase("checked")

	committed := fl.sendsWhere(func(s *drillSend) bool {
		return s.group.home == "eu" && s.resp.GetState() == clientv1.DeliveryState_DELIVERY_STATE_COMMITTED && s.answered.Before(killAt)
	})
	accepted := fl.sendsWhere(func(s *drillSend) bool {
		return s.resp.GetState() == clientv1.DeliveryState_DELIVERY_STATE_ACCEPTED
	})
	retried := fl.sendsWhere(func(s *drillSend) bool { return s.resp != nil && s.attempts > 1 })
	if len(committed) == 0 {
		t.Errorf("no message to eu's group was committed before the first kill")
	}
	// Receipts go to the sender's sessions open at the time; eu's users
	// had none for a while.
	var notEU []*drillSend
	for _, s := range accepted {
		if s.user.region != "eu" {
			notEU = append(notEU, s)
		}
	}
	if len(notEU) == 0 {
		t.Errorf("no send of ap or us users was answered accepted while eu was away")
	}
	fl.checkReceipts(t, notEU)
	t.Logf("drill c (eu killed twice): first kill: detect %s, eu serving again %s after the restart began, links direct %s after; "+
		"second kill, cut off with %d outbox entries: serving %s after, links direct %s after; settle %s; "+
		"%d messages to eu's group committed before the first kill, %d accepted at eu before the second, %d accepted in all, %d sent more than once",
		drillMS(detect), drillMS(serving), drillMS(heal), held, drillMS(serving2), drillMS(heal2), drillMS(settled),
		len(committed), len(acceptedAtEU), len(accepted), len(retried))
}

// TestDrillNetworkStall (drill d) puts a TCP proxy on eu–us, in both
// directions, and has it stop forwarding without closing anything, as a
// network that drops every packet would. Heartbeats must see the link
// down within drillDetect, and traffic go through ap; when the proxy
// forwards again, the link comes back up and direct.
func TestDrillNetworkStall(t *testing.T) {
	needBinaries(t)
	clk := newDrillClock(t)
	addrs := allocDrillAddrs(t)
	var reserved []string
	for _, a := range addrs {
		reserved = append(reserved, a.roaming, a.client, a.admin, a.metrics)
	}
	toUS := startTCPProxy(t, addrs["us"].roaming, reserved...) // eu dials us here
	toEU := startTCPProxy(t, addrs["eu"].roaming, reserved...) // us dials eu here
	fed := startDrillFederation(t, addrs, map[string]map[string]string{
		"eu": {"us": toUS.Addr()},
		"us": {"eu": toEU.Addr()},
	})
	// Should the test end mid-stall, the regions must not stop on
	// stalled links: the proxies close first.
	t.Cleanup(func() {
		toUS.Close()
		toEU.Close()
	})
	clk.phase("ap, eu and us serving, eu–us through the proxies; every link up and direct")
	fl := newDrillFleet(t, fed)
	clk.phase("%d users and %d groups; every member following", len(fl.users), len(fl.groups))
	load := fl.startLoad(t)
	time.Sleep(drillWarmup)
	if toUS.Accepted() == 0 || toEU.Accepted() == 0 || toUS.Bytes() == 0 || toEU.Bytes() == 0 {
		t.Fatalf("eu–us does not go through the proxies: eu→us %d connections, %d bytes; us→eu %d connections, %d bytes",
			toUS.Accepted(), toUS.Bytes(), toEU.Accepted(), toEU.Bytes())
	}
	relays := fed.relaysCarried(t, "ap")

	stallAt := time.Now()
	toUS.Pause()
	toEU.Pause()
	detect := fed.waitLink(t, stallAt, "eu", "us", "down", drillLinkIs(drillStateDown), 5*time.Second)
	detectUS := fed.waitLink(t, stallAt, "us", "eu", "down", drillLinkIs(drillStateDown), 5*time.Second)
	if detect > drillDetect {
		t.Errorf("eu saw its link to us down %s after the network stalled; want within %s", drillMS(detect), drillDetect)
	}
	route := max(
		fed.waitLink(t, stallAt, "eu", "us", "routed via ap", drillLinkVia("ap"), 5*time.Second),
		fed.waitLink(t, stallAt, "us", "eu", "routed via ap", drillLinkVia("ap"), 5*time.Second))
	clk.phase("eu–us stalled: eu sees it down %s after, us %s after; both route via ap %s after", drillMS(detect), drillMS(detectUS), drillMS(route))
	time.Sleep(time.Until(stallAt.Add(drillFault)))

	across := fed.checkFaultViaAP(t, fl, stallAt, "stall", "down", drillStateDown, relays)

	resumeAt := time.Now()
	toUS.Resume()
	toEU.Resume()
	heal := max(
		fed.waitLink(t, resumeAt, "eu", "us", "up and direct", drillLinkDirect, 10*time.Second),
		fed.waitLink(t, resumeAt, "us", "eu", "up and direct", drillLinkDirect, 10*time.Second))
	clk.phase("forwarding again: eu–us up and direct at both ends %s after", drillMS(heal))
	time.Sleep(drillAfterHeal)
	load.Stop()
	clk.phase("load stopped")
	settled := fl.settle(t)
	clk.phase("settled in %s", drillMS(settled))
	fed.logLinkChanges(t)
	fl.check(t)
	clk.phase("checked")
	t.Logf("drill d (eu–us network stall): detect %s at eu, %s at us; reroute %s (both ends via ap), first message across eu–us delivered %s after the stall; heal %s, settle %s",
		drillMS(detect), drillMS(detectUS), drillMS(route), drillMS(across.Sub(stallAt)), drillMS(heal), drillMS(settled))
}
