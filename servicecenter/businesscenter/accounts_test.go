package businesscenter_test

import (
	"context"
	"encoding/base64"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	"github.com/roamfed/roamfed/internal/ids"
)

func TestRegister(t *testing.T) {
	t.Parallel()
	r := startRegion(t)
	ctx := t.Context()

	resp, err := r.client.Register(ctx, &clientv1.RegisterRequest{Username: "alice", Password: testPassword, DisplayName: "Alice A."})
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	if !ids.Valid(ids.User, resp.GetUserId()) {
		t.Errorf("user_id %q is not a user id", resp.GetUserId())
	}
	if resp.GetHomeRegion() != "ap" {
		t.Errorf("home_region = %q, want ap", resp.GetHomeRegion())
	}

	_, err = r.client.Register(ctx, &clientv1.RegisterRequest{Username: "alice", Password: "another password"})
	wantCode(t, err, codes.AlreadyExists)
}

// TestRegisterConcurrent registers one username from several clients at
// once: exactly one gets the account.
func TestRegisterConcurrent(t *testing.T) {
	t.Parallel()
	r := startRegion(t)
	const n = 8
	codesSeen := make(chan codes.Code, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			_, err := r.client.Register(t.Context(), &clientv1.RegisterRequest{Username: "popular", Password: testPassword})
			codesSeen <- status.Code(err)
		})
	}
	wg.Wait()
	close(codesSeen)
	count := make(map[codes.Code]int)
	for c := range codesSeen {
		count[c]++
	}
	if count[codes.OK] != 1 || count[codes.AlreadyExists] != n-1 {
		t.Errorf("outcomes %v, want one OK and %d AlreadyExists", count, n-1)
	}
}

func TestRegisterInvalid(t *testing.T) {
	t.Parallel()
	r := startRegion(t)
	tests := []struct {
		name       string
		req        *clientv1.RegisterRequest
		wantFields []string
	}{
		{"empty username", &clientv1.RegisterRequest{Username: "", Password: testPassword}, []string{"username"}},
		{"65-byte username", &clientv1.RegisterRequest{Username: strings.Repeat("a", 65), Password: testPassword}, []string{"username"}},
		{"username with space", &clientv1.RegisterRequest{Username: "a b", Password: testPassword}, []string{"username"}},
		{"non-ASCII username", &clientv1.RegisterRequest{Username: "é", Password: testPassword}, []string{"username"}},
		{"short password", &clientv1.RegisterRequest{Username: "bob", Password: "1234567"}, []string{"password"}},
		{"long password", &clientv1.RegisterRequest{Username: "bob", Password: strings.Repeat("p", 1025)}, []string{"password"}},
		{"multi-line display name", &clientv1.RegisterRequest{Username: "bob", Password: testPassword, DisplayName: "a\nb"}, []string{"display_name"}},
		{"everything wrong", &clientv1.RegisterRequest{Username: "a b", Password: "short"}, []string{"username", "password"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := r.client.Register(t.Context(), tt.req)
			wantCode(t, err, codes.InvalidArgument)
			if got := fieldViolations(err); !slices.Equal(got, tt.wantFields) {
				t.Errorf("field violations = %q, want %q", got, tt.wantFields)
			}
		})
	}
	// None of the refused registrations created an account.
	for _, name := range []string{"bob", "a b", "é"} {
		_, err := r.client.Login(t.Context(), &clientv1.LoginRequest{Username: name, Password: testPassword})
		if c := status.Code(err); c != codes.Unauthenticated && c != codes.InvalidArgument {
			t.Errorf("Login %q after refused registration: %v, want Unauthenticated or InvalidArgument", name, err)
		}
	}
}

func TestLogin(t *testing.T) {
	t.Parallel()
	r := startRegion(t)
	uid := r.register(t, "carol")

	before := time.Now()
	resp, err := r.client.Login(t.Context(), &clientv1.LoginRequest{Username: "carol", Password: testPassword})
	if err != nil {
		t.Fatalf("Login: %v", err)
	}
	tok := resp.GetToken()
	if len(tok) != 43 {
		t.Errorf("token %q is %d chars, want 43", tok, len(tok))
	}
	if b, err := base64.RawURLEncoding.DecodeString(tok); err != nil || len(b) != 32 {
		t.Errorf("token %q is not 32 bytes of base64url: %d bytes, %v", tok, len(b), err)
	}
	if resp.GetUserId() != uid || resp.GetHomeRegion() != "ap" || resp.GetRegion() != "ap" {
		t.Errorf("Login = user %q home %q region %q, want %q ap ap", resp.GetUserId(), resp.GetHomeRegion(), resp.GetRegion(), uid)
	}
	if resp.GetExpiresAt() == nil {
		t.Fatal("expires_at is unset")
	}
	if exp := resp.GetExpiresAt().AsTime(); !exp.After(before.Add(time.Hour)) {
		t.Errorf("expires_at %v is not well after login at %v", exp, before)
	}

	// Every login is a new session with its own token.
	again, err := r.client.Login(t.Context(), &clientv1.LoginRequest{Username: "carol", Password: testPassword})
	if err != nil {
		t.Fatalf("second Login: %v", err)
	}
	if again.GetToken() == tok {
		t.Error("two logins returned the same token")
	}
	if _, err := r.client.ListGroups(bearer(t.Context(), tok), &clientv1.ListGroupsRequest{}); err != nil {
		t.Errorf("ListGroups with the token: %v", err)
	}
}

func TestLoginRefused(t *testing.T) {
	t.Parallel()
	r := startRegion(t)
	r.register(t, "dave")

	_, wrongPassword := r.client.Login(t.Context(), &clientv1.LoginRequest{Username: "dave", Password: "not the password"})
	wantCode(t, wrongPassword, codes.Unauthenticated)
	_, unknownUser := r.client.Login(t.Context(), &clientv1.LoginRequest{Username: "nobody", Password: testPassword})
	wantCode(t, unknownUser, codes.Unauthenticated)
	// The two must not tell an attacker which usernames exist.
	if a, b := status.Convert(wrongPassword).Message(), status.Convert(unknownUser).Message(); a != b {
		t.Errorf("wrong password says %q, unknown user says %q; want the same", a, b)
	}
}

func TestLogout(t *testing.T) {
	t.Parallel()
	r := startRegion(t)
	r.register(t, "erin")
	first := r.login(t, "erin")
	second := r.login(t, "erin")

	if _, err := r.client.Logout(first.ctx, &clientv1.LogoutRequest{}); err != nil {
		t.Fatalf("Logout: %v", err)
	}
	_, err := r.client.ListGroups(first.ctx, &clientv1.ListGroupsRequest{})
	wantCode(t, err, codes.Unauthenticated)
	_, err = r.client.Logout(first.ctx, &clientv1.LogoutRequest{})
	wantCode(t, err, codes.Unauthenticated)
	_, err = r.client.CreateGroup(first.ctx, &clientv1.CreateGroupRequest{Name: "after logout"})
	wantCode(t, err, codes.Unauthenticated)

	// Logout revokes the calling token only.
	if _, err := r.client.ListGroups(second.ctx, &clientv1.ListGroupsRequest{}); err != nil {
		t.Errorf("ListGroups with the other session's token: %v", err)
	}
}

func TestAuthorizationHeader(t *testing.T) {
	t.Parallel()
	r := startRegion(t)
	u := r.newUser(t, "frank")
	forged := base64.RawURLEncoding.EncodeToString(make([]byte, 32))

	tests := []struct {
		name string
		md   []string // key, value pairs; nil sends no metadata
	}{
		{"missing", nil},
		{"forged token", []string{"authorization", "Bearer " + forged}},
		{"no scheme", []string{"authorization", u.token}},
		{"basic scheme", []string{"authorization", "Basic " + u.token}},
		{"scheme only", []string{"authorization", "Bearer"}},
		{"empty token", []string{"authorization", "Bearer "}},
		{"oversized token", []string{"authorization", "Bearer " + strings.Repeat("A", 300)}},
		{"token with a trailing space", []string{"authorization", "Bearer " + u.token + " "}},
		{"two headers", []string{"authorization", "Bearer " + u.token, "authorization", "Bearer " + u.token}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			if tt.md != nil {
				ctx = metadata.AppendToOutgoingContext(ctx, tt.md...)
			}
			_, err := r.client.ListGroups(ctx, &clientv1.ListGroupsRequest{})
			wantCode(t, err, codes.Unauthenticated)
			_, err = r.client.SendMessage(ctx, &clientv1.SendMessageRequest{GroupId: ids.New(ids.Group), Body: "hi"})
			wantCode(t, err, codes.Unauthenticated)

			// The Session stream refuses the same way, before Ready.
			sctx, cancel := context.WithCancel(ctx)
			defer cancel()
			stream, err := r.client.Session(sctx)
			if err != nil {
				t.Fatalf("Session: %v", err)
			}
			f, err := stream.Recv()
			if err == nil {
				t.Fatalf("Session sent %v, want Unauthenticated", f)
			}
			wantCode(t, err, codes.Unauthenticated)
		})
	}

	// The scheme is case-insensitive.
	ctx := metadata.AppendToOutgoingContext(t.Context(), "authorization", "bearer "+u.token)
	if _, err := r.client.ListGroups(ctx, &clientv1.ListGroupsRequest{}); err != nil {
		t.Errorf("lower-case bearer scheme: %v", err)
	}
}
