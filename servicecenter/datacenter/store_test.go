package datacenter

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	recordv1 "github.com/roamfed/roamfed/api/record/v1"
	"github.com/roamfed/roamfed/internal/ids"
)

// openStore opens a Store in dir (a fresh temp dir when dir is "") and
// closes it when the test ends.
func openStore(t testing.TB, dir string, opts Options) *Store {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// newMessage returns a message ready to append.
func newMessage(groupID, senderID, clientMsgID, body string) *recordv1.Message {
	return &recordv1.Message{
		GroupId:     groupID,
		MessageId:   ids.New(ids.Message),
		SenderId:    senderID,
		SenderName:  "name of " + senderID,
		ClientMsgId: clientMsgID,
		Body:        body,
		SentAt:      timestamppb.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)),
	}
}

// mustAppend appends m and fails the test on error.
func mustAppend(t testing.TB, s *Store, m *recordv1.Message) Appended {
	t.Helper()
	res, err := s.Append(context.Background(), m)
	if err != nil {
		t.Fatalf("Append(%s/%s): %v", m.GetGroupId(), m.GetClientMsgId(), err)
	}
	return res
}

// readLog returns a group's whole log, failing the test unless it is
// numbered 1..LastSeq with no gaps or repeats.
func readLog(t testing.TB, s *Store, groupID string) []*recordv1.Message {
	t.Helper()
	last, err := s.LastSeq(groupID)
	if err != nil {
		t.Fatalf("LastSeq(%s): %v", groupID, err)
	}
	var all []*recordv1.Message
	after := uint64(0)
	// Each page moves after forward by at least one, so the loop is bounded
	// by last; the extra iterations catch a History that never says "done".
	for range last + 2 {
		page, more, err := s.History(groupID, after, 100)
		if err != nil {
			t.Fatalf("History(%s, %d): %v", groupID, after, err)
		}
		all = append(all, page...)
		if len(page) > 0 {
			after = page[len(page)-1].GetSeq()
		}
		if !more {
			break
		}
	}
	if uint64(len(all)) != last {
		t.Fatalf("group %s: History has %d messages, LastSeq is %d", groupID, len(all), last)
	}
	for i, m := range all {
		if m.GetSeq() != uint64(i+1) {
			t.Fatalf("group %s: message %d has seq %d (gap or repeat)", groupID, i+1, m.GetSeq())
		}
		if m.GetGroupId() != groupID {
			t.Fatalf("group %s: seq %d belongs to group %q", groupID, m.GetSeq(), m.GetGroupId())
		}
	}
	return all
}

func newUser(name string) *recordv1.User {
	return &recordv1.User{
		Id:             ids.New(ids.User),
		Name:           name,
		DisplayName:    "The " + name,
		CredentialHash: "$argon2id$v=19$m=65536,t=1,p=4$c2FsdA$aGFzaA",
		HomeRegion:     "eu",
		CreatedAt:      timestamppb.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)),
	}
}

func newGroup(ownerID string, memberIDs ...string) *recordv1.Group {
	g := &recordv1.Group{
		Id:         ids.New(ids.Group),
		Name:       "group",
		HomeRegion: "eu",
		Version:    1,
		OwnerId:    ownerID,
		Settings:   map[string]string{"k": "v"},
	}
	for _, id := range memberIDs {
		g.Members = append(g.Members, &recordv1.Member{UserId: id, Name: "n" + id, HomeRegion: "eu"})
	}
	return g
}

func TestUsers(t *testing.T) {
	s := openStore(t, "", Options{})
	alice := newUser("alice")
	if err := s.CreateUser(proto.Clone(alice).(*recordv1.User)); err != nil {
		t.Fatalf("CreateUser(alice): %v", err)
	}
	if err := s.CreateUser(newUser("bob")); err != nil {
		t.Fatalf("CreateUser(bob): %v", err)
	}
	if err := s.CreateUser(newUser("alice")); !errors.Is(err, ErrUserExists) {
		t.Fatalf("CreateUser(second alice) = %v, want ErrUserExists", err)
	}
	// The failed create must not have replaced the first alice.
	tests := []struct {
		name    string
		lookup  func() (*recordv1.User, error)
		want    *recordv1.User
		wantErr error
	}{
		{"by id", func() (*recordv1.User, error) { return s.User(alice.GetId()) }, alice, nil},
		{"by name", func() (*recordv1.User, error) { return s.UserByName("alice") }, alice, nil},
		{"unknown id", func() (*recordv1.User, error) { return s.User(ids.New(ids.User)) }, nil, ErrUserNotFound},
		{"unknown name", func() (*recordv1.User, error) { return s.UserByName("carol") }, nil, ErrUserNotFound},
		{"empty name", func() (*recordv1.User, error) { return s.UserByName("") }, nil, ErrUserNotFound},
		{"name is not an id", func() (*recordv1.User, error) { return s.User("alice") }, nil, ErrUserNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.lookup()
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.want != nil && !proto.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSessions(t *testing.T) {
	s := openStore(t, "", Options{})
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	rec := &recordv1.SessionToken{
		UserId:    ids.New(ids.User),
		IssuedAt:  timestamppb.New(now.Add(-time.Hour)),
		ExpiresAt: timestamppb.New(now.Add(time.Hour)),
		Region:    "eu",
	}
	if err := s.PutSession("tok-live", rec); err != nil {
		t.Fatalf("PutSession: %v", err)
	}

	t.Run("lookup", func(t *testing.T) {
		tests := []struct {
			name    string
			token   string
			at      time.Time
			wantErr error
		}{
			{"live", "tok-live", now, nil},
			{"just before expiry", "tok-live", now.Add(time.Hour - time.Nanosecond), nil},
			{"at expiry", "tok-live", now.Add(time.Hour), ErrSessionNotFound},
			{"after expiry", "tok-live", now.Add(2 * time.Hour), ErrSessionNotFound},
			{"unknown token", "tok-other", now, ErrSessionNotFound},
			{"empty token", "", now, ErrSessionNotFound},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				got, err := s.Session(tt.token, tt.at)
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Session = %v, want %v", err, tt.wantErr)
				}
				if err == nil && !proto.Equal(got, rec) {
					t.Errorf("Session = %v, want %v", got, rec)
				}
			})
		}
	})

	t.Run("token is not stored in the clear", func(t *testing.T) {
		if v, err := s.getRaw(key(tagToken, "tok-live")); err != nil || v != nil {
			t.Errorf("raw token key holds %q, %v; want nothing", v, err)
		}
		if v, err := s.getRaw(TokenKey("tok-live")); err != nil || v == nil {
			t.Errorf("hashed token key holds %q, %v; want the record", v, err)
		}
	})

	t.Run("delete", func(t *testing.T) {
		if err := s.PutSession("tok-del", rec); err != nil {
			t.Fatalf("PutSession: %v", err)
		}
		if err := s.DeleteSession("tok-del"); err != nil {
			t.Fatalf("DeleteSession: %v", err)
		}
		if _, err := s.Session("tok-del", now); !errors.Is(err, ErrSessionNotFound) {
			t.Errorf("Session after delete = %v, want ErrSessionNotFound", err)
		}
		if err := s.DeleteSession("tok-never-was"); err != nil {
			t.Errorf("DeleteSession(unknown) = %v, want nil", err)
		}
		if _, err := s.Session("tok-live", now); err != nil {
			t.Errorf("deleting one session touched another: %v", err)
		}
	})

	t.Run("DeleteExpiredSessions", func(t *testing.T) {
		s := openStore(t, "", Options{})
		put := func(tok string, exp time.Time) {
			t.Helper()
			r := proto.Clone(rec).(*recordv1.SessionToken)
			r.ExpiresAt = timestamppb.New(exp)
			if err := s.PutSession(tok, r); err != nil {
				t.Fatalf("PutSession(%s): %v", tok, err)
			}
		}
		var expired, live []string
		for i := range 5 {
			tok := fmt.Sprintf("expired-%d", i)
			put(tok, now.Add(-time.Duration(i+1)*time.Minute))
			expired = append(expired, tok)
		}
		// Session treats "expires at now" as expired; so must the sweeper.
		put("expires-now", now)
		expired = append(expired, "expires-now")
		for i := range 3 {
			tok := fmt.Sprintf("live-%d", i)
			put(tok, now.Add(time.Duration(i+1)*time.Minute))
			live = append(live, tok)
		}

		if n, err := s.DeleteExpiredSessions(now, 0); err != nil || n != 0 {
			t.Errorf("DeleteExpiredSessions(limit 0) = %d, %v; want 0, nil", n, err)
		}
		n, err := s.DeleteExpiredSessions(now, 2)
		if err != nil || n > 2 {
			t.Errorf("DeleteExpiredSessions(limit 2) = %d, %v; want at most 2, nil", n, err)
		}
		m, err := s.DeleteExpiredSessions(now, 100)
		if err != nil || n+m != len(expired) {
			t.Errorf("DeleteExpiredSessions(limit 100) = %d, %v; want %d in all", m, err, len(expired)-n)
		}
		for _, tok := range expired {
			if v, _ := s.getRaw(TokenKey(tok)); v != nil {
				t.Errorf("expired session %s is still stored", tok)
			}
		}
		for _, tok := range live {
			if _, err := s.Session(tok, now); err != nil {
				t.Errorf("live session %s: %v", tok, err)
			}
		}
		if n, err := s.DeleteExpiredSessions(now, 100); err != nil || n != 0 {
			t.Errorf("second sweep = %d, %v; want 0, nil", n, err)
		}
	})

	// Sweeps that read fewer sessions than are live must still reach
	// every expired one: each starts where the last one stopped.
	t.Run("DeleteExpiredSessionsResumes", func(t *testing.T) {
		s := openStore(t, "", Options{})
		expired := make(map[string]bool)
		for i := range 60 {
			r := proto.Clone(rec).(*recordv1.SessionToken)
			r.ExpiresAt = timestamppb.New(now.Add(time.Minute))
			tok := fmt.Sprintf("tok-%d", i)
			if i%4 == 0 {
				r.ExpiresAt = timestamppb.New(now.Add(-time.Minute))
				expired[tok] = true
			}
			if err := s.PutSession(tok, r); err != nil {
				t.Fatal(err)
			}
		}
		removed := 0
		for range 6 { // 6 sweeps of 10 read each session once
			n, err := s.DeleteExpiredSessions(now, 10)
			if err != nil {
				t.Fatal(err)
			}
			removed += n
		}
		if removed != len(expired) {
			t.Errorf("6 sweeps of 10 removed %d sessions; want the %d expired ones", removed, len(expired))
		}
		for i := range 60 {
			tok := fmt.Sprintf("tok-%d", i)
			v, _ := s.getRaw(TokenKey(tok))
			if stored := v != nil; stored == expired[tok] {
				t.Errorf("session %s: stored %v, expired %v", tok, stored, expired[tok])
			}
		}
		// Going round again finds nothing more, and a session that
		// expires later is found on a later round.
		later := proto.Clone(rec).(*recordv1.SessionToken)
		later.ExpiresAt = timestamppb.New(now.Add(time.Minute))
		if err := s.PutSession("tok-later", later); err != nil {
			t.Fatal(err)
		}
		removed = 0
		for range 8 {
			n, err := s.DeleteExpiredSessions(now.Add(2*time.Minute), 10)
			if err != nil {
				t.Fatal(err)
			}
			removed += n
		}
		if want := 60 - len(expired) + 1; removed != want {
			t.Errorf("after every session expired, 8 sweeps of 10 removed %d; want %d", removed, want)
		}
	})
}

func TestCreateGroup(t *testing.T) {
	s := openStore(t, "", Options{})
	g := newGroup("u_c", "u_c", "u_a", "u_b") // members deliberately unsorted
	want := proto.Clone(g).(*recordv1.Group)
	if err := s.CreateGroup(g); err != nil {
		t.Fatalf("CreateGroup: %v", err)
	}
	if err := s.CreateGroup(newGroup("u_x", "u_x")); err != nil {
		t.Fatalf("CreateGroup(other): %v", err)
	}
	dup := newGroup("u_z", "u_z")
	dup.Id = g.GetId()
	if err := s.CreateGroup(dup); !errors.Is(err, ErrGroupExists) {
		t.Fatalf("CreateGroup(same id) = %v, want ErrGroupExists", err)
	}
	if _, err := s.Group(ids.New(ids.Group)); !errors.Is(err, ErrGroupNotFound) {
		t.Errorf("Group(unknown) = %v, want ErrGroupNotFound", err)
	}

	got, err := s.Group(g.GetId())
	if err != nil {
		t.Fatalf("Group: %v", err)
	}
	if got.GetOwnerId() != "u_c" || got.GetVersion() != 1 || got.GetSettings()["k"] != "v" {
		t.Errorf("Group = %v, want the created record", got)
	}
	var gotIDs []string
	for _, m := range got.GetMembers() {
		gotIDs = append(gotIDs, m.GetUserId())
	}
	if !slices.Equal(gotIDs, []string{"u_a", "u_b", "u_c"}) {
		t.Errorf("members = %v, want sorted [u_a u_b u_c]", gotIDs)
	}
	for _, tt := range []struct {
		user string
		want bool
	}{{"u_a", true}, {"u_b", true}, {"u_c", true}, {"u_d", false}, {"u_", false}, {"", false}, {"u_z", false}} {
		if IsMember(got, tt.user) != tt.want {
			t.Errorf("IsMember(%q) = %v, want %v", tt.user, !tt.want, tt.want)
		}
	}
	for _, u := range []string{"u_a", "u_b", "u_c"} {
		gs, err := s.GroupsOf(u)
		if err != nil || !slices.Equal(gs, []string{g.GetId()}) {
			t.Errorf("GroupsOf(%s) = %v, %v; want [%s]", u, gs, err, g.GetId())
		}
	}
	if gs, err := s.GroupsOf("u_z"); err != nil || len(gs) != 0 {
		t.Errorf("GroupsOf(u_z) = %v, %v; the refused duplicate must not index its members", gs, err)
	}

	// A second store on the same data decodes the record from disk rather
	// than from the first store's cache.
	dir := t.TempDir()
	s1, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	g2 := proto.Clone(want).(*recordv1.Group)
	if err := s1.CreateGroup(g2); err != nil {
		t.Fatal(err)
	}
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openStore(t, dir, Options{})
	fromDisk, err := s2.Group(want.GetId())
	if err != nil {
		t.Fatalf("Group after reopen: %v", err)
	}
	if !IsMember(fromDisk, "u_a") || !IsMember(fromDisk, "u_c") || IsMember(fromDisk, "u_d") {
		t.Errorf("IsMember on a record read from disk disagrees with its members %v", fromDisk.GetMembers())
	}
}

func TestUpdateGroup(t *testing.T) {
	s := openStore(t, "", Options{})
	g := newGroup("u_a", "u_a")
	g.Version = 7
	id := g.GetId()
	if err := s.CreateGroup(g); err != nil {
		t.Fatal(err)
	}
	errNo := errors.New("change refused")
	steps := []struct {
		name        string
		change      func(g *recordv1.Group) error
		wantErr     error
		wantVersion uint64
		wantName    string
		wantMembers []string
	}{
		{"rename", func(g *recordv1.Group) error { g.Name = "renamed"; return nil }, nil, 8, "renamed", []string{"u_a"}},
		{"join unsorted", func(g *recordv1.Group) error {
			g.Members = append(g.Members, &recordv1.Member{UserId: "u_c"}, &recordv1.Member{UserId: "u_b"})
			return nil
		}, nil, 9, "renamed", []string{"u_a", "u_b", "u_c"}},
		{"change cannot set the version", func(g *recordv1.Group) error { g.Version = 100; return nil }, nil, 10, "renamed", []string{"u_a", "u_b", "u_c"}},
		{"no-op still bumps", func(*recordv1.Group) error { return nil }, nil, 11, "renamed", []string{"u_a", "u_b", "u_c"}},
		{"refused change stores nothing", func(g *recordv1.Group) error {
			g.Name = "must not stick"
			g.Members = g.Members[:1]
			return fmt.Errorf("validate: %w", errNo)
		}, errNo, 11, "renamed", []string{"u_a", "u_b", "u_c"}},
		{"leave", func(g *recordv1.Group) error {
			g.Members = slices.DeleteFunc(g.Members, func(m *recordv1.Member) bool { return m.GetUserId() == "u_b" })
			return nil
		}, nil, 12, "renamed", []string{"u_a", "u_c"}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			before, err := s.Group(id)
			if err != nil {
				t.Fatal(err)
			}
			beforeCopy := proto.Clone(before)
			got, err := s.UpdateGroup(id, st.change)
			if !errors.Is(err, st.wantErr) {
				t.Fatalf("UpdateGroup = %v, want %v", err, st.wantErr)
			}
			if err == nil && got.GetVersion() != st.wantVersion {
				t.Errorf("returned version %d, want %d", got.GetVersion(), st.wantVersion)
			}
			if !proto.Equal(before, beforeCopy) {
				t.Errorf("UpdateGroup modified the record an earlier Group call returned")
			}
			stored, err := s.Group(id)
			if err != nil {
				t.Fatal(err)
			}
			if stored.GetVersion() != st.wantVersion || stored.GetName() != st.wantName {
				t.Errorf("stored version %d name %q, want %d %q", stored.GetVersion(), stored.GetName(), st.wantVersion, st.wantName)
			}
			var members []string
			for _, m := range stored.GetMembers() {
				members = append(members, m.GetUserId())
				if !IsMember(stored, m.GetUserId()) {
					t.Errorf("IsMember(%s) = false for a listed member", m.GetUserId())
				}
			}
			if !slices.Equal(members, st.wantMembers) {
				t.Errorf("members = %v, want %v", members, st.wantMembers)
			}
			for _, u := range []string{"u_a", "u_b", "u_c"} {
				gs, err := s.GroupsOf(u)
				if err != nil {
					t.Fatal(err)
				}
				if want := slices.Contains(st.wantMembers, u); slices.Contains(gs, id) != want {
					t.Errorf("GroupsOf(%s) = %v, member: %v", u, gs, want)
				}
			}
		})
	}
	if _, err := s.UpdateGroup(ids.New(ids.Group), func(*recordv1.Group) error { return nil }); !errors.Is(err, ErrGroupNotFound) {
		t.Errorf("UpdateGroup(unknown) = %v, want ErrGroupNotFound", err)
	}
}

func TestPutGroup(t *testing.T) {
	s := openStore(t, "", Options{})
	id := ids.New(ids.Group)
	version := func(v uint64, name string, members ...string) *recordv1.Group {
		g := newGroup("u_o", members...)
		g.Id, g.Version, g.Name = id, v, name
		return g
	}
	steps := []struct {
		name        string
		put         *recordv1.Group
		wantVersion uint64
		wantName    string
		wantMembers []string
	}{
		{"first copy", version(5, "v5", "u_b", "u_a"), 5, "v5", []string{"u_a", "u_b"}},
		{"older ignored", version(3, "v3", "u_c"), 5, "v5", []string{"u_a", "u_b"}},
		{"same version ignored", version(5, "v5 again", "u_c"), 5, "v5", []string{"u_a", "u_b"}},
		{"newer replaces", version(6, "v6", "u_c", "u_a"), 6, "v6", []string{"u_a", "u_c"}},
		{"skipping versions is allowed", version(9, "v9", "u_d"), 9, "v9", []string{"u_d"}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if err := s.PutGroup(st.put); err != nil {
				t.Fatalf("PutGroup: %v", err)
			}
			g, err := s.Group(id)
			if err != nil {
				t.Fatal(err)
			}
			if g.GetVersion() != st.wantVersion || g.GetName() != st.wantName {
				t.Errorf("stored version %d name %q, want %d %q", g.GetVersion(), g.GetName(), st.wantVersion, st.wantName)
			}
			for _, u := range []string{"u_a", "u_b", "u_c", "u_d"} {
				want := slices.Contains(st.wantMembers, u)
				if IsMember(g, u) != want {
					t.Errorf("IsMember(%s) = %v, want %v", u, !want, want)
				}
				gs, err := s.GroupsOf(u)
				if err != nil {
					t.Fatal(err)
				}
				if slices.Contains(gs, id) != want {
					t.Errorf("GroupsOf(%s) = %v, member: %v", u, gs, want)
				}
			}
		})
	}
}

func TestGroupsOfOrder(t *testing.T) {
	s := openStore(t, "", Options{})
	var want []string
	for range 5 {
		g := newGroup("u_a", "u_a")
		if err := s.CreateGroup(g); err != nil {
			t.Fatal(err)
		}
		want = append(want, g.GetId())
	}
	// A user whose id extends u_a's must not see u_a's groups.
	if err := s.CreateGroup(newGroup("u_ab", "u_ab")); err != nil {
		t.Fatal(err)
	}
	slices.Sort(want)
	got, err := s.GroupsOf("u_a")
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("GroupsOf(u_a) = %v, %v; want %v", got, err, want)
	}
}

func TestCursors(t *testing.T) {
	s := openStore(t, "", Options{})
	if err := s.AdvanceCursors(nil); err != nil {
		t.Fatalf("AdvanceCursors(nil): %v", err)
	}
	steps := []struct {
		name string
		move []Cursor
		want map[[2]string]uint64
	}{
		{"first", []Cursor{{"u_a", "g_1", 5}, {"u_a", "g_2", 1}},
			map[[2]string]uint64{{"u_a", "g_1"}: 5, {"u_a", "g_2"}: 1, {"u_b", "g_1"}: 0}},
		{"back is ignored", []Cursor{{"u_a", "g_1", 3}},
			map[[2]string]uint64{{"u_a", "g_1"}: 5, {"u_a", "g_2"}: 1}},
		{"same is ignored", []Cursor{{"u_a", "g_1", 5}},
			map[[2]string]uint64{{"u_a", "g_1"}: 5}},
		{"forward", []Cursor{{"u_a", "g_1", 9}, {"u_b", "g_1", 2}},
			map[[2]string]uint64{{"u_a", "g_1"}: 9, {"u_b", "g_1"}: 2, {"u_a", "g_2"}: 1}},
		{"one call, forward then back", []Cursor{{"u_a", "g_1", 20}, {"u_a", "g_1", 12}},
			map[[2]string]uint64{{"u_a", "g_1"}: 20}},
		{"one call, back then forward", []Cursor{{"u_a", "g_2", 0}, {"u_a", "g_2", 4}},
			map[[2]string]uint64{{"u_a", "g_2"}: 4}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if err := s.AdvanceCursors(st.move); err != nil {
				t.Fatalf("AdvanceCursors: %v", err)
			}
			for k, want := range st.want {
				got, err := s.CursorOf(k[0], k[1])
				if err != nil || got != want {
					t.Errorf("CursorOf(%s, %s) = %d, %v; want %d", k[0], k[1], got, err, want)
				}
			}
		})
	}
}

func TestClosed(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	g := newGroup("u_a", "u_a")
	if err := s.CreateGroup(g); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Group(g.GetId()); err != nil { // cached from here on
		t.Fatal(err)
	}
	mustAppend(t, s, newMessage(g.GetId(), "u_a", "c1", "hi"))
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	ctx := context.Background()
	calls := []struct {
		name string
		call func() error
	}{
		{"CreateUser", func() error { return s.CreateUser(newUser("x")) }},
		{"User", func() error { _, err := s.User("u_a"); return err }},
		{"UserByName", func() error { _, err := s.UserByName("x"); return err }},
		{"PutSession", func() error { return s.PutSession("t", &recordv1.SessionToken{}) }},
		{"Session", func() error { _, err := s.Session("t", time.Now()); return err }},
		{"DeleteSession", func() error { return s.DeleteSession("t") }},
		{"DeleteExpiredSessions", func() error { _, err := s.DeleteExpiredSessions(time.Now(), 10); return err }},
		{"CreateGroup", func() error { return s.CreateGroup(newGroup("u_a", "u_a")) }},
		{"Group", func() error { _, err := s.Group(g.GetId()); return err }},
		{"UpdateGroup", func() error {
			_, err := s.UpdateGroup(g.GetId(), func(*recordv1.Group) error { return nil })
			return err
		}},
		{"PutGroup", func() error {
			ng := proto.Clone(g).(*recordv1.Group)
			ng.Version++
			return s.PutGroup(ng)
		}},
		{"GroupsOf", func() error { _, err := s.GroupsOf("u_a"); return err }},
		{"AdvanceCursors", func() error { return s.AdvanceCursors([]Cursor{{"u_a", g.GetId(), 1}}) }},
		{"CursorOf", func() error { _, err := s.CursorOf("u_a", g.GetId()); return err }},
		{"Append", func() error { _, err := s.Append(ctx, newMessage(g.GetId(), "u_a", "c2", "hi")); return err }},
		{"LastSeq", func() error { _, err := s.LastSeq(g.GetId()); return err }},
		{"History", func() error { _, _, err := s.History(g.GetId(), 0, 10); return err }},
	}
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			if err := c.call(); !errors.Is(err, ErrClosed) {
				t.Errorf("%s after Close = %v, want ErrClosed", c.name, err)
			}
		})
	}
}

// TestReopen closes a store and opens its directory again: everything
// written before Close is there, logs continue without a gap, and
// idempotency keys still hold.
func TestReopen(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	s1, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	alice := newUser("alice")
	if err := s1.CreateUser(proto.Clone(alice).(*recordv1.User)); err != nil {
		t.Fatal(err)
	}
	sess := &recordv1.SessionToken{UserId: alice.GetId(), ExpiresAt: timestamppb.New(now.Add(time.Hour))}
	if err := s1.PutSession("tok", sess); err != nil {
		t.Fatal(err)
	}
	g1, g2 := newGroup(alice.GetId(), alice.GetId()), newGroup(alice.GetId(), alice.GetId(), "u_b")
	for _, g := range []*recordv1.Group{g1, g2} {
		if err := s1.CreateGroup(g); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s1.UpdateGroup(g2.GetId(), func(g *recordv1.Group) error { g.Name = "second"; return nil }); err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{g1.GetId(): 10, g2.GetId(): 3}
	before := map[string][]*recordv1.Message{}
	for gid, n := range counts {
		for i := range n {
			res := mustAppend(t, s1, newMessage(gid, alice.GetId(), fmt.Sprintf("c%d", i), fmt.Sprintf("body %d", i)))
			before[gid] = append(before[gid], res.Message)
		}
	}
	if err := s1.AdvanceCursors([]Cursor{{alice.GetId(), g1.GetId(), 7}}); err != nil {
		t.Fatal(err)
	}
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := openStore(t, dir, Options{})
	if u, err := s2.UserByName("alice"); err != nil || !proto.Equal(u, alice) {
		t.Errorf("UserByName after reopen = %v, %v; want %v", u, err, alice)
	}
	if err := s2.CreateUser(newUser("alice")); !errors.Is(err, ErrUserExists) {
		t.Errorf("CreateUser(alice) after reopen = %v, want ErrUserExists", err)
	}
	if got, err := s2.Session("tok", now); err != nil || !proto.Equal(got, sess) {
		t.Errorf("Session after reopen = %v, %v", got, err)
	}
	if g, err := s2.Group(g2.GetId()); err != nil || g.GetName() != "second" || g.GetVersion() != 2 || !IsMember(g, "u_b") {
		t.Errorf("Group after reopen = %v, %v; want version 2 named second with u_b", g, err)
	}
	if gs, err := s2.GroupsOf("u_b"); err != nil || !slices.Equal(gs, []string{g2.GetId()}) {
		t.Errorf("GroupsOf(u_b) after reopen = %v, %v", gs, err)
	}
	if c, err := s2.CursorOf(alice.GetId(), g1.GetId()); err != nil || c != 7 {
		t.Errorf("CursorOf after reopen = %d, %v; want 7", c, err)
	}
	for gid, n := range counts {
		if last, err := s2.LastSeq(gid); err != nil || last != uint64(n) {
			t.Errorf("LastSeq(%s) after reopen = %d, %v; want %d", gid, last, err, n)
		}
		for i, m := range readLog(t, s2, gid) {
			if !proto.Equal(m, before[gid][i]) {
				t.Errorf("group %s seq %d after reopen = %v, want %v", gid, i+1, m, before[gid][i])
			}
		}
		// An old key is still a duplicate, and the log goes on at n+1.
		old := before[gid][n-1]
		dup := newMessage(gid, alice.GetId(), old.GetClientMsgId(), "retry")
		res := mustAppend(t, s2, dup)
		if !res.Duplicate || res.Message.GetSeq() != uint64(n) || res.Message.GetMessageId() != old.GetMessageId() {
			t.Errorf("retry of %s after reopen = %+v, want duplicate of seq %d", old.GetClientMsgId(), res, n)
		}
		res = mustAppend(t, s2, newMessage(gid, alice.GetId(), "after-reopen", "new"))
		if res.Duplicate || res.Message.GetSeq() != uint64(n+1) {
			t.Errorf("first append after reopen = seq %d dup %v, want seq %d", res.Message.GetSeq(), res.Duplicate, n+1)
		}
		readLog(t, s2, gid)
	}
}
