package datacenter

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	recordv1 "github.com/roamfed/roamfed/api/record/v1"
	"github.com/roamfed/roamfed/internal/ids"
)

func TestRecentCommits(t *testing.T) {
	s := openStore(t, "", Options{Region: "eu"})
	old, busy, elsewhere := newGroup("u_a", "u_a"), newGroup("u_a", "u_a"), newGroup("u_a", "u_a")
	elsewhere.HomeRegion = "us"
	for _, g := range []*recordv1.Group{old, busy} {
		if err := s.CreateGroup(g); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutGroup(elsewhere); err != nil {
		t.Fatal(err)
	}
	send := func(g *recordv1.Group, body string) {
		t.Helper()
		// The home stamps the commit time before it appends.
		m := &recordv1.Message{GroupId: g.GetId(), MessageId: ids.New(ids.Message), SenderId: "u_a", ClientMsgId: body, Body: body, CommittedAt: timestamppb.Now()}
		if _, err := s.Append(t.Context(), m); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := s.RecentCommits(time.Minute, 100); err != nil || len(got) != 0 {
		t.Fatalf("empty store: %v, %v", got, err)
	}
	send(old, "old-1")
	send(busy, "busy-1")
	time.Sleep(300 * time.Millisecond)
	for i := 2; i <= 4; i++ {
		send(busy, fmt.Sprint("busy-", i))
	}
	send(old, "old-2")
	send(elsewhere, "elsewhere-1")

	bodies := func(ms []*recordv1.Message) []string {
		var out []string
		for _, m := range ms {
			out = append(out, fmt.Sprintf("%s#%d", m.GetBody(), m.GetSeq()))
		}
		return out
	}
	got, err := s.RecentCommits(200*time.Millisecond, 100)
	if err != nil {
		t.Fatal(err)
	}
	// Each group's in order; a group homed elsewhere is not this
	// region's to deliver.
	want := map[string][]string{
		old.GetId():  {"old-2#2"},
		busy.GetId(): {"busy-2#2", "busy-3#3", "busy-4#4"},
	}
	byGroup := map[string][]*recordv1.Message{}
	for _, m := range got {
		byGroup[m.GetGroupId()] = append(byGroup[m.GetGroupId()], m)
	}
	if len(byGroup) != len(want) {
		t.Fatalf("RecentCommits(200ms) = %v; want %v", bodies(got), want)
	}
	for g, w := range want {
		if b := bodies(byGroup[g]); fmt.Sprint(b) != fmt.Sprint(w) {
			t.Errorf("group %s: %v, want %v", g, b, w)
		}
	}
	// The limit keeps the newest.
	got, err = s.RecentCommits(time.Minute, 2)
	if err != nil {
		t.Fatal(err)
	}
	if b := bodies(got); len(b) != 2 || !contains(b, "old-2#2") || !contains(b, "busy-4#4") {
		t.Errorf("RecentCommits(1m, limit 2) = %v; want busy-4#4 and old-2#2", b)
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
