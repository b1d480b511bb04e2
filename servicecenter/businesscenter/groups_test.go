package businesscenter_test

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	"github.com/roamfed/roamfed/internal/ids"
)

func TestCreateGroup(t *testing.T) {
	t.Parallel()
	r := startRegion(t)
	alice := r.newUser(t, "alice")

	resp, err := r.client.CreateGroup(alice.ctx, &clientv1.CreateGroupRequest{
		Name:     "Ramen 🍜",
		Notice:   "line one\n\tline two",
		Settings: map[string]string{"mute": "true", "lang": "日本語"},
	})
	if err != nil {
		t.Fatalf("CreateGroup: %v", err)
	}
	g := resp.GetGroup()
	if !ids.Valid(ids.Group, g.GetId()) {
		t.Errorf("id %q is not a group id", g.GetId())
	}
	if g.GetName() != "Ramen 🍜" || g.GetNotice() != "line one\n\tline two" || g.GetHomeRegion() != "ap" ||
		g.GetVersion() != 1 || g.GetOwnerId() != alice.id || g.GetCreatedAt() == nil {
		t.Errorf("created group = %v", g)
	}
	if want := map[string]string{"mute": "true", "lang": "日本語"}; !maps.Equal(g.GetSettings(), want) {
		t.Errorf("settings = %v, want %v", g.GetSettings(), want)
	}
	if got := memberIDs(g); !slices.Equal(got, []string{alice.id}) {
		t.Errorf("members = %v, want the owner alone", got)
	}
}

func TestCreateGroupInvalid(t *testing.T) {
	t.Parallel()
	r := startRegion(t)
	alice := r.newUser(t, "alice")
	tooMany := make(map[string]string)
	for i := range 33 {
		tooMany[fmt.Sprintf("k%d", i)] = "v"
	}

	tests := []struct {
		name      string
		req       *clientv1.CreateGroupRequest
		wantField string
	}{
		{"empty name", &clientv1.CreateGroupRequest{Name: ""}, "name"},
		{"65-byte name", &clientv1.CreateGroupRequest{Name: strings.Repeat("n", 65)}, "name"},
		{"invalid UTF-8 name", &clientv1.CreateGroupRequest{Name: "bad \xff name"}, "name"},
		{"NUL in name", &clientv1.CreateGroupRequest{Name: "a\x00b"}, "name"},
		{"bell in name", &clientv1.CreateGroupRequest{Name: "ding\a"}, "name"},
		{"C1 control in name", &clientv1.CreateGroupRequest{Name: "a\u0085b"}, "name"},
		{"newline in name", &clientv1.CreateGroupRequest{Name: "two\nlines"}, "name"},
		{"carriage return in notice", &clientv1.CreateGroupRequest{Name: "ok", Notice: "a\rb"}, "notice"},
		{"notice over 4096 bytes", &clientv1.CreateGroupRequest{Name: "ok", Notice: strings.Repeat("x", 4097)}, "notice"},
		{"invalid UTF-8 notice", &clientv1.CreateGroupRequest{Name: "ok", Notice: "\xc3"}, "notice"},
		{"bad settings key", &clientv1.CreateGroupRequest{Name: "ok", Settings: map[string]string{"a b": "v"}}, "settings key"},
		{"empty settings key", &clientv1.CreateGroupRequest{Name: "ok", Settings: map[string]string{"": "v"}}, "settings key"},
		{"invalid UTF-8 settings value", &clientv1.CreateGroupRequest{Name: "ok", Settings: map[string]string{"k": "\xff"}}, "settings[k]"},
		{"33 settings", &clientv1.CreateGroupRequest{Name: "ok", Settings: tooMany}, "settings"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := r.client.CreateGroup(alice.ctx, tt.req)
			wantCode(t, err, codes.InvalidArgument)
			if got := fieldViolations(err); !slices.Equal(got, []string{tt.wantField}) {
				t.Errorf("field violations = %q, want [%q]", got, tt.wantField)
			}
		})
	}
	resp, err := r.client.ListGroups(alice.ctx, &clientv1.ListGroupsRequest{})
	if err != nil {
		t.Fatalf("ListGroups: %v", err)
	}
	if len(resp.GetGroups()) != 0 {
		t.Errorf("refused creations stored groups: %v", resp.GetGroups())
	}
}

func TestGetGroup(t *testing.T) {
	t.Parallel()
	r := startRegion(t)
	alice := r.newUser(t, "alice")
	bob := r.newUser(t, "bob")
	created := r.createGroup(t, alice)

	resp, err := r.client.GetGroup(alice.ctx, &clientv1.GetGroupRequest{GroupId: created.GetId()})
	if err != nil {
		t.Fatalf("GetGroup by member: %v", err)
	}
	if !proto.Equal(resp.GetGroup(), created) {
		t.Errorf("GetGroup = %v, want %v", resp.GetGroup(), created)
	}

	tests := []struct {
		name    string
		who     *user
		groupID string
		want    codes.Code
	}{
		{"non-member", bob, created.GetId(), codes.PermissionDenied},
		{"unknown group", alice, ids.New(ids.Group), codes.NotFound},
		{"empty id", alice, "", codes.InvalidArgument},
		{"malformed id", alice, "g_nope", codes.InvalidArgument},
		{"user id", alice, alice.id, codes.InvalidArgument},
		{"lower-case id", alice, strings.ToLower(created.GetId()), codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := r.client.GetGroup(tt.who.ctx, &clientv1.GetGroupRequest{GroupId: tt.groupID})
			wantCode(t, err, tt.want)
			if tt.want == codes.InvalidArgument {
				if got := fieldViolations(err); !slices.Equal(got, []string{"group_id"}) {
					t.Errorf("field violations = %q, want [group_id]", got)
				}
			}
		})
	}
}

func TestUpdateGroup(t *testing.T) {
	t.Parallel()
	r := startRegion(t)
	alice := r.newUser(t, "alice")
	cr, err := r.client.CreateGroup(alice.ctx, &clientv1.CreateGroupRequest{
		Name: "before", Notice: "old notice", Settings: map[string]string{"a": "1", "b": "2"},
	})
	if err != nil {
		t.Fatalf("CreateGroup: %v", err)
	}
	gid := cr.GetGroup().GetId()

	steps := []struct {
		name         string
		req          *clientv1.UpdateGroupRequest
		wantName     string
		wantNotice   string
		wantSettings map[string]string
	}{
		{
			"name only",
			&clientv1.UpdateGroupRequest{Name: proto.String("after")},
			"after", "old notice", map[string]string{"a": "1", "b": "2"},
		},
		{
			"notice only",
			&clientv1.UpdateGroupRequest{Notice: proto.String("new notice")},
			"after", "new notice", map[string]string{"a": "1", "b": "2"},
		},
		{
			"empty notice clears it",
			&clientv1.UpdateGroupRequest{Notice: proto.String("")},
			"after", "", map[string]string{"a": "1", "b": "2"},
		},
		{
			"settings merge: empty value deletes, others add or replace",
			&clientv1.UpdateGroupRequest{Settings: map[string]string{"b": "", "a": "one", "c": "3"}},
			"after", "", map[string]string{"a": "one", "c": "3"},
		},
		{
			"deleting a missing key",
			&clientv1.UpdateGroupRequest{Settings: map[string]string{"zzz": ""}},
			"after", "", map[string]string{"a": "one", "c": "3"},
		},
	}
	version := cr.GetGroup().GetVersion()
	for _, st := range steps {
		st.req.GroupId = gid
		resp, err := r.client.UpdateGroup(alice.ctx, st.req)
		if err != nil {
			t.Fatalf("%s: UpdateGroup: %v", st.name, err)
		}
		g := resp.GetGroup()
		if g.GetVersion() != version+1 {
			t.Errorf("%s: version %d, want %d", st.name, g.GetVersion(), version+1)
		}
		version = g.GetVersion()
		if g.GetName() != st.wantName || g.GetNotice() != st.wantNotice || !maps.Equal(g.GetSettings(), st.wantSettings) {
			t.Errorf("%s: got name %q notice %q settings %v, want %q %q %v",
				st.name, g.GetName(), g.GetNotice(), g.GetSettings(), st.wantName, st.wantNotice, st.wantSettings)
		}
		got := getGroup(t, r, alice, gid)
		if !proto.Equal(got, g) {
			t.Errorf("%s: GetGroup = %v, want what UpdateGroup returned: %v", st.name, got, g)
		}
	}

	// With the right expected version the update goes through.
	resp, err := r.client.UpdateGroup(alice.ctx, &clientv1.UpdateGroupRequest{GroupId: gid, Name: proto.String("checked"), ExpectedVersion: version})
	if err != nil {
		t.Fatalf("UpdateGroup at expected version: %v", err)
	}
	if resp.GetGroup().GetVersion() != version+1 || resp.GetGroup().GetName() != "checked" {
		t.Errorf("UpdateGroup at expected version = %v", resp.GetGroup())
	}
}

func TestUpdateGroupRefused(t *testing.T) {
	t.Parallel()
	r := startRegion(t)
	alice := r.newUser(t, "alice")
	bob := r.newUser(t, "bob")
	full := make(map[string]string)
	for i := range 32 {
		full[fmt.Sprintf("k%d", i)] = "v"
	}
	cr, err := r.client.CreateGroup(alice.ctx, &clientv1.CreateGroupRequest{Name: "g", Settings: full})
	if err != nil {
		t.Fatalf("CreateGroup: %v", err)
	}
	gid := cr.GetGroup().GetId()
	// Move past version 1 so that a stale expected version is not 0, which
	// means "no check".
	if _, err := r.client.UpdateGroup(alice.ctx, &clientv1.UpdateGroupRequest{GroupId: gid, Notice: proto.String("v2")}); err != nil {
		t.Fatalf("UpdateGroup: %v", err)
	}
	before := getGroup(t, r, alice, gid)
	if before.GetVersion() != 2 {
		t.Fatalf("version = %d, want 2", before.GetVersion())
	}

	tests := []struct {
		name string
		who  *user
		req  *clientv1.UpdateGroupRequest
		want codes.Code
	}{
		{"stale expected version", alice, &clientv1.UpdateGroupRequest{GroupId: gid, Name: proto.String("x"), ExpectedVersion: before.GetVersion() - 1}, codes.FailedPrecondition},
		{"future expected version", alice, &clientv1.UpdateGroupRequest{GroupId: gid, Name: proto.String("x"), ExpectedVersion: before.GetVersion() + 1}, codes.FailedPrecondition},
		{"non-member", bob, &clientv1.UpdateGroupRequest{GroupId: gid, Name: proto.String("x")}, codes.PermissionDenied},
		{"empty name", alice, &clientv1.UpdateGroupRequest{GroupId: gid, Name: proto.String("")}, codes.InvalidArgument},
		{"invalid UTF-8 notice", alice, &clientv1.UpdateGroupRequest{GroupId: gid, Notice: proto.String("\xff")}, codes.InvalidArgument},
		{"merge over the settings limit", alice, &clientv1.UpdateGroupRequest{GroupId: gid, Settings: map[string]string{"one-more": "v"}}, codes.InvalidArgument},
		{"unknown group", alice, &clientv1.UpdateGroupRequest{GroupId: ids.New(ids.Group), Name: proto.String("x")}, codes.NotFound},
		{"malformed id", alice, &clientv1.UpdateGroupRequest{GroupId: "g_", Name: proto.String("x")}, codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := r.client.UpdateGroup(tt.who.ctx, tt.req)
			wantCode(t, err, tt.want)
			if after := getGroup(t, r, alice, gid); !proto.Equal(after, before) {
				t.Errorf("a refused update changed the group:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
}

func TestJoinLeave(t *testing.T) {
	t.Parallel()
	r := startRegion(t)
	alice := r.newUser(t, "alice")
	bob := r.newUser(t, "bob")
	g := r.createGroup(t, alice)
	gid := g.GetId()

	jr, err := r.client.JoinGroup(bob.ctx, &clientv1.JoinGroupRequest{GroupId: gid})
	if err != nil {
		t.Fatalf("JoinGroup: %v", err)
	}
	joined := jr.GetGroup()
	if joined.GetVersion() != g.GetVersion()+1 {
		t.Errorf("version after join = %d, want %d", joined.GetVersion(), g.GetVersion()+1)
	}
	if got, want := memberIDs(joined), sorted(alice.id, bob.id); !slices.Equal(got, want) {
		t.Errorf("members after join = %v, want %v", got, want)
	}
	if _, err := r.client.GetGroup(bob.ctx, &clientv1.GetGroupRequest{GroupId: gid}); err != nil {
		t.Errorf("GetGroup by the new member: %v", err)
	}

	// Joining again changes nothing.
	jr, err = r.client.JoinGroup(bob.ctx, &clientv1.JoinGroupRequest{GroupId: gid})
	if err != nil {
		t.Fatalf("second JoinGroup: %v", err)
	}
	if !proto.Equal(jr.GetGroup(), joined) {
		t.Errorf("second join returned %v, want the unchanged %v", jr.GetGroup(), joined)
	}
	if got := getGroup(t, r, alice, gid); got.GetVersion() != joined.GetVersion() {
		t.Errorf("second join bumped the version to %d", got.GetVersion())
	}

	if _, err := r.client.LeaveGroup(bob.ctx, &clientv1.LeaveGroupRequest{GroupId: gid}); err != nil {
		t.Fatalf("LeaveGroup: %v", err)
	}
	left := getGroup(t, r, alice, gid)
	if left.GetVersion() != joined.GetVersion()+1 {
		t.Errorf("version after leave = %d, want %d", left.GetVersion(), joined.GetVersion()+1)
	}
	if got := memberIDs(left); !slices.Equal(got, []string{alice.id}) {
		t.Errorf("members after leave = %v, want alice alone", got)
	}
	_, err = r.client.GetGroup(bob.ctx, &clientv1.GetGroupRequest{GroupId: gid})
	wantCode(t, err, codes.PermissionDenied)
	lr, err := r.client.ListGroups(bob.ctx, &clientv1.ListGroupsRequest{})
	if err != nil {
		t.Fatalf("ListGroups: %v", err)
	}
	if len(lr.GetGroups()) != 0 {
		t.Errorf("bob still lists %v after leaving", lr.GetGroups())
	}

	tests := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"leave when not a member", func() error {
			_, err := r.client.LeaveGroup(bob.ctx, &clientv1.LeaveGroupRequest{GroupId: gid})
			return err
		}, codes.PermissionDenied},
		{"leave unknown group", func() error {
			_, err := r.client.LeaveGroup(bob.ctx, &clientv1.LeaveGroupRequest{GroupId: ids.New(ids.Group)})
			return err
		}, codes.NotFound},
		{"leave malformed id", func() error {
			_, err := r.client.LeaveGroup(bob.ctx, &clientv1.LeaveGroupRequest{GroupId: "group"})
			return err
		}, codes.InvalidArgument},
		{"join unknown group", func() error {
			_, err := r.client.JoinGroup(bob.ctx, &clientv1.JoinGroupRequest{GroupId: ids.New(ids.Group)})
			return err
		}, codes.NotFound},
		{"join malformed id", func() error {
			_, err := r.client.JoinGroup(bob.ctx, &clientv1.JoinGroupRequest{GroupId: ""})
			return err
		}, codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantCode(t, tt.call(), tt.want)
			if got := getGroup(t, r, alice, gid); !proto.Equal(got, left) {
				t.Errorf("a refused call changed the group: %v, want %v", got, left)
			}
		})
	}
}

// TestJoinConcurrent has many users join one group at once: each join is
// one new version and nobody is lost.
func TestJoinConcurrent(t *testing.T) {
	t.Parallel()
	r := startRegion(t)
	owner := r.newUser(t, "owner")
	g := r.createGroup(t, owner)
	// With the owner, within the default burst of logins from one address.
	const n = 8
	users := make([]*user, n)
	want := []string{owner.id}
	for i := range users {
		users[i] = r.newUser(t, "joiner")
		want = append(want, users[i].id)
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for _, u := range users {
		wg.Go(func() {
			if _, err := r.client.JoinGroup(u.ctx, &clientv1.JoinGroupRequest{GroupId: g.GetId()}); err != nil {
				errs <- fmt.Errorf("%s: %w", u.name, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("JoinGroup: %v", err)
	}
	got := getGroup(t, r, owner, g.GetId())
	if got.GetVersion() != g.GetVersion()+n {
		t.Errorf("version %d after %d joins, want %d", got.GetVersion(), n, g.GetVersion()+n)
	}
	if ids := memberIDs(got); !slices.Equal(ids, sorted(want...)) {
		t.Errorf("members %v, want %v", ids, sorted(want...))
	}
}

func TestListGroups(t *testing.T) {
	t.Parallel()
	r := startRegion(t)
	alice := r.newUser(t, "alice")
	bob := r.newUser(t, "bob")
	busy := r.createGroup(t, alice, bob)
	quiet := r.createGroup(t, alice)
	for i := range 3 {
		r.send(t, alice, busy.GetId(), fmt.Sprintf("m%d", i), "hello")
	}

	resp, err := r.client.ListGroups(alice.ctx, &clientv1.ListGroupsRequest{})
	if err != nil {
		t.Fatalf("ListGroups: %v", err)
	}
	got := make(map[string]*clientv1.GroupSummary)
	for _, s := range resp.GetGroups() {
		got[s.GetId()] = s
	}
	want := map[string]*clientv1.GroupSummary{
		busy.GetId(): {
			Id: busy.GetId(), Name: busy.GetName(), HomeRegion: "ap", Version: busy.GetVersion(),
			MemberCount: 2, LastSeq: 3, ReadSeq: 0,
		},
		quiet.GetId(): {
			Id: quiet.GetId(), Name: quiet.GetName(), HomeRegion: "ap", Version: quiet.GetVersion(),
			MemberCount: 1, LastSeq: 0, ReadSeq: 0,
		},
	}
	if len(got) != len(want) {
		t.Fatalf("ListGroups = %v, want %d groups", resp.GetGroups(), len(want))
	}
	for id, w := range want {
		if !proto.Equal(got[id], w) {
			t.Errorf("summary of %s = %v, want %v", id, got[id], w)
		}
	}

	bs := r.summary(t, bob, busy.GetId())
	if bs.GetLastSeq() != 3 || bs.GetReadSeq() != 0 {
		t.Errorf("bob's summary = %v, want last_seq 3, read_seq 0", bs)
	}
}

func getGroup(t *testing.T, r *region, u *user, gid string) *clientv1.Group {
	t.Helper()
	resp, err := r.client.GetGroup(u.ctx, &clientv1.GetGroupRequest{GroupId: gid})
	if err != nil {
		t.Fatalf("GetGroup %s: %v", gid, err)
	}
	return resp.GetGroup()
}

func memberIDs(g *clientv1.Group) []string {
	var out []string
	for _, m := range g.GetMembers() {
		out = append(out, m.GetUserId())
	}
	slices.Sort(out)
	return out
}

func sorted(s ...string) []string {
	slices.Sort(s)
	return s
}
