package businesscenter

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	recordv1 "github.com/roamfed/roamfed/api/record/v1"
	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
	"github.com/roamfed/roamfed/internal/ids"
	"github.com/roamfed/roamfed/internal/password"
	"github.com/roamfed/roamfed/internal/validate"
	"github.com/roamfed/roamfed/servicecenter/datacenter"
)

// Home is the authority for the users and groups homed in this region. It
// answers this region's own clients and, through the roaming system, every
// other region: each check (membership, versions, credentials) happens here,
// at the home, whoever asks.
type Home struct {
	region string
	store  *datacenter.Store
	now    func() time.Time
	creds  *credentials
	// grantTTL is how long a login verified for another region lets that
	// region act for the user.
	grantTTL time.Duration
	claims   *claims
}

// ErrNotHomedHere is also what Home returns for a group or user that lives
// elsewhere: a region answers only for what it homes.

// homedGroup returns a group homed in this region.
func (h *Home) homedGroup(groupID string) (*recordv1.Group, error) {
	g, err := h.store.Group(groupID)
	if err != nil {
		return nil, fmt.Errorf("group %s: %w", groupID, err)
	}
	if g.GetHomeRegion() != h.region {
		return nil, fmt.Errorf("group %s: %w (%s)", groupID, ErrNotHomedHere, g.GetHomeRegion())
	}
	return g, nil
}

// memberGroup returns a group homed here with userID's membership of it.
func (h *Home) memberGroup(groupID, userID string) (*recordv1.Group, *recordv1.Member, error) {
	g, err := h.homedGroup(groupID)
	if err != nil {
		return nil, nil, err
	}
	m := datacenter.FindMember(g, userID)
	if m == nil {
		return nil, nil, fmt.Errorf("group %s: %w", groupID, ErrNotMember)
	}
	return g, m, nil
}

// GetGroup returns a group's data to one of its members.
func (h *Home) GetGroup(groupID, userID string) (*recordv1.Group, error) {
	g, _, err := h.memberGroup(groupID, userID)
	return g, err
}

// StoreGroup applies one change to a group homed here and assigns its new
// version. Joining when already a member and leaving when not are refused
// only for leave (ErrNotMember); a repeated join changes nothing.
func (h *Home) StoreGroup(req *roamingv1.StoreGroupRequest) (*recordv1.Group, error) {
	userID := req.GetUserId()
	if _, err := h.homedGroup(req.GetGroupId()); err != nil {
		return nil, err
	}
	if j := req.GetJoin(); j != nil {
		if j.GetUserId() != userID {
			return nil, &validate.Error{Field: "join.user_id", Reason: "must be the acting user"}
		}
		if g, err := h.store.Group(req.GetGroupId()); err == nil && datacenter.IsMember(g, userID) {
			return g, nil
		}
	}
	g, err := h.store.UpdateGroup(req.GetGroupId(), func(g *recordv1.Group) error {
		now := timestamppb.New(h.now())
		switch c := req.GetChange().(type) {
		case *roamingv1.StoreGroupRequest_Join:
			if datacenter.IsMember(g, userID) {
				return errAlreadyMember
			}
			if err := h.checkJoin(g, c.Join); err != nil {
				return err
			}
			m := proto.Clone(c.Join).(*recordv1.Member)
			m.JoinedAt = now
			g.Members = append(g.Members, m)
		case *roamingv1.StoreGroupRequest_Leave:
			i := slicesIndexMember(g, userID)
			if i < 0 {
				return ErrNotMember
			}
			g.Members = append(g.Members[:i], g.Members[i+1:]...)
		case *roamingv1.StoreGroupRequest_Update:
			if !datacenter.IsMember(g, userID) {
				return ErrNotMember
			}
			if err := applyUpdate(g, c.Update); err != nil {
				return err
			}
		default:
			return &validate.Error{Field: "change", Reason: "must be one of update, join, leave"}
		}
		g.UpdatedAt = now
		return nil
	})
	if errors.Is(err, errAlreadyMember) {
		return h.store.Group(req.GetGroupId())
	}
	if err != nil {
		return nil, fmt.Errorf("group %s: %w", req.GetGroupId(), err)
	}
	return g, nil
}

// Group limits, checked at the home. They bound what one group costs to
// fan out and what one user costs to list.
const (
	MaxMembersPerGroup = 10_000
	MaxGroupsPerUser   = 1_000
)

// checkJoin refuses a join that would pass a group limit, or whose
// membership record is malformed (a peer sends it).
func (h *Home) checkJoin(g *recordv1.Group, m *recordv1.Member) error {
	if err := errors.Join(
		validate.ID("join.user_id", ids.User, m.GetUserId()),
		validate.Username("join.name", m.GetName()),
	); err != nil {
		return err
	}
	if len(g.GetMembers()) >= MaxMembersPerGroup {
		return quotaError("members_per_group", "group:"+g.GetId(), fmt.Sprintf("the group has %d members; the limit is %d", len(g.GetMembers()), MaxMembersPerGroup))
	}
	groups, err := h.store.GroupsOf(m.GetUserId())
	if err != nil {
		return err
	}
	if len(groups) >= MaxGroupsPerUser {
		return quotaError("groups_per_user", "user:"+m.GetUserId(), fmt.Sprintf("the user is in %d groups homed in %s; the limit is %d", len(groups), h.region, MaxGroupsPerUser))
	}
	return nil
}

// errAlreadyMember aborts a join that raced with another join.
var errAlreadyMember = errors.New("already a member")

func slicesIndexMember(g *recordv1.Group, userID string) int {
	for i, m := range g.GetMembers() {
		if m.GetUserId() == userID {
			return i
		}
	}
	return -1
}

// applyUpdate applies an update's fields to g after validating them.
func applyUpdate(g *recordv1.Group, u *roamingv1.GroupChange) error {
	if err := errors.Join(
		validateOptional(u.Name, func(v string) error { return validate.Name("name", v, true) }),
		validateOptional(u.Notice, func(v string) error { return validate.Text("notice", v, validate.MaxNoticeBytes, false) }),
		validate.Settings("settings", u.GetSettings()),
	); err != nil {
		return err
	}
	if v := u.GetExpectedVersion(); v != 0 && v != g.GetVersion() {
		return fmt.Errorf("%w: expected %d, now %d", ErrVersionMismatch, v, g.GetVersion())
	}
	if u.Name != nil {
		g.Name = u.GetName()
	}
	if u.Notice != nil {
		g.Notice = u.GetNotice()
	}
	if len(u.GetSettings()) > 0 && g.Settings == nil {
		g.Settings = make(map[string]string)
	}
	for k, v := range u.GetSettings() {
		if v == "" {
			delete(g.Settings, k)
		} else {
			g.Settings[k] = v
		}
	}
	return validate.Settings("settings", g.GetSettings())
}

func validateOptional(v *string, check func(string) error) error {
	if v == nil {
		return nil
	}
	return check(*v)
}

// Commit commits a message to a group homed here, from one of its members.
// m carries message_id, sender_id, client_msg_id, body, sent_at and
// origin_region; Commit sets sender_name, committed_at and seq.
func (h *Home) Commit(ctx context.Context, m *recordv1.Message) (datacenter.Appended, error) {
	res, errs := h.CommitAll(ctx, []*recordv1.Message{m})
	return res[0], errs[0]
}

// CommitAll commits messages as Commit does, in order: a group's messages
// among them get increasing sequence numbers in slice order.
func (h *Home) CommitAll(ctx context.Context, msgs []*recordv1.Message) ([]datacenter.Appended, []error) {
	return h.StartCommitAll(ctx, msgs)()
}

// StartCommitAll checks and queues messages as CommitAll does and returns
// a function that waits for their outcomes: batches started one after
// another are committed in that order.
func (h *Home) StartCommitAll(ctx context.Context, msgs []*recordv1.Message) func() ([]datacenter.Appended, []error) {
	res := make([]datacenter.Appended, len(msgs))
	errs := make([]error, len(msgs))
	var ok []*recordv1.Message
	var at []int
	now := timestamppb.New(h.now())
	for i, m := range msgs {
		if err := errors.Join(
			validate.ClientMsgID("client_msg_id", m.GetClientMsgId()),
			validate.Body("body", m.GetBody()),
		); err != nil {
			errs[i] = err
			continue
		}
		_, mem, err := h.memberGroup(m.GetGroupId(), m.GetSenderId())
		if err != nil {
			errs[i] = err
			continue
		}
		m.SenderName = mem.GetName()
		m.CommittedAt = now
		ok = append(ok, m)
		at = append(at, i)
	}
	if len(ok) == 0 {
		return func() ([]datacenter.Appended, []error) { return res, errs }
	}
	wait := h.store.StartAppendAll(ctx, ok)
	return func() ([]datacenter.Appended, []error) {
		r, e := wait()
		for j, i := range at {
			res[i], errs[i] = r[j], e[j]
		}
		return res, errs
	}
}

// History returns a group's messages after a sequence number, for a member.
func (h *Home) History(req *roamingv1.FetchHistoryRequest) (*roamingv1.FetchHistoryResponse, error) {
	if _, _, err := h.memberGroup(req.GetGroupId(), req.GetUserId()); err != nil {
		return nil, err
	}
	limit := int(req.GetLimit())
	switch {
	case limit == 0:
		limit = defaultHistoryLimit
	case limit > maxHistoryLimit:
		limit = maxHistoryLimit
	}
	msgs, _, err := h.store.History(req.GetGroupId(), req.GetAfterSeq(), limit)
	if err != nil {
		return nil, err
	}
	// The last sequence number is read after the page, so that it covers
	// the page. A message still being synced can already be readable; it
	// is not committed yet, so it is left out, and it comes live or with
	// the next page.
	last, err := h.store.LastSeq(req.GetGroupId())
	if err != nil {
		return nil, err
	}
	for i, m := range msgs {
		if m.GetSeq() > last {
			msgs = msgs[:i]
			break
		}
	}
	end := req.GetAfterSeq()
	if len(msgs) > 0 {
		end = msgs[len(msgs)-1].GetSeq()
	}
	return &roamingv1.FetchHistoryResponse{Messages: msgs, LastSeq: last, HasMore: last > end}, nil
}

// VerifyLoginFor checks the credentials of a user homed here for a login
// at region, and lets region act for the user for as long as a login
// session lasts.
func (h *Home) VerifyLoginFor(ctx context.Context, username, pw, region string) (*recordv1.User, error) {
	u, err := h.VerifyLogin(ctx, username, pw)
	if err != nil {
		return nil, err
	}
	if region != h.region {
		if err := h.store.PutGrant(u.GetId(), region, h.now().Add(h.grantTTL)); err != nil {
			return nil, err
		}
	}
	return u, nil
}

// Authorize reports until when region may act for a user homed here: it is
// the user's home, or a login there was verified here and has not expired.
func (h *Home) Authorize(userID, region string) (time.Time, bool, error) {
	// The data center, not the directory, says who is homed here: the
	// directory holds what peers publish.
	u, err := h.store.User(userID)
	if errors.Is(err, datacenter.ErrUserNotFound) {
		return time.Time{}, false, nil
	}
	if err != nil || u.GetHomeRegion() != h.region {
		return time.Time{}, false, err
	}
	if region == h.region {
		return h.now().Add(h.grantTTL), true, nil
	}
	return h.store.Grant(userID, region, h.now())
}

// VerifyLogin checks the credentials of a user homed here and returns the
// user without the credential hash.
func (h *Home) VerifyLogin(ctx context.Context, username, pw string) (*recordv1.User, error) {
	u, err := h.store.UserByName(username)
	if errors.Is(err, datacenter.ErrUserNotFound) {
		// Spend the same time as a wrong password, so that timing does
		// not tell which usernames exist.
		_ = h.creds.verify(ctx, pw, h.creds.dummy())
		return nil, ErrBadCredentials
	}
	if err != nil {
		return nil, err
	}
	if u.GetHomeRegion() != h.region {
		return nil, fmt.Errorf("user %s: %w", username, ErrNotHomedHere)
	}
	if err := h.creds.verify(ctx, pw, u.GetCredentialHash()); err != nil {
		if errors.Is(err, password.ErrMismatch) {
			return nil, ErrBadCredentials
		}
		return nil, err
	}
	out := proto.Clone(u).(*recordv1.User)
	out.CredentialHash = ""
	return out, nil
}

// SetLocation records where a user homed here is connected: region, or
// nowhere (at home or offline) when online is false and region is where
// the user was.
func (h *Home) SetLocation(userID, region string, online bool) error {
	loc := region
	if region == h.region {
		loc = ""
	}
	if !online {
		cur, err := h.store.Locate(roamingv1.DirectoryKind_DIRECTORY_KIND_USER, userID)
		if err != nil {
			return fmt.Errorf("user %s: %w", userID, err)
		}
		if cur.GetLocation() != region {
			// The user has moved on since; keep the newer location.
			return nil
		}
		loc = ""
	}
	return h.store.SetLocation(userID, loc)
}

// UserGroups returns the groups homed here that userID is a member of.
func (h *Home) UserGroups(userID string) ([]*roamingv1.UserGroup, error) {
	gids, err := h.store.GroupsOf(userID)
	if err != nil {
		return nil, err
	}
	out := make([]*roamingv1.UserGroup, 0, len(gids))
	for _, id := range gids {
		g, err := h.store.Group(id)
		if err != nil {
			return nil, fmt.Errorf("group %s: %w", id, err)
		}
		if g.GetHomeRegion() != h.region {
			continue
		}
		last, err := h.store.LastSeq(id)
		if err != nil {
			return nil, err
		}
		read, err := h.store.CursorOf(userID, id)
		if err != nil {
			return nil, err
		}
		out = append(out, &roamingv1.UserGroup{Group: g, LastSeq: last, ReadSeq: min(read, last)})
	}
	return out, nil
}
