package businesscenter

import (
	"context"
	"errors"
	"fmt"
	"maps"

	"google.golang.org/protobuf/types/known/timestamppb"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	recordv1 "github.com/roamfed/roamfed/api/record/v1"
	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
	"github.com/roamfed/roamfed/internal/ids"
	"github.com/roamfed/roamfed/internal/validate"
	"github.com/roamfed/roamfed/servicecenter/datacenter"
)

// CreateGroup creates a group homed in this region, with the caller as
// owner and first member.
func (s *Server) CreateGroup(ctx context.Context, req *clientv1.CreateGroupRequest) (*clientv1.CreateGroupResponse, error) {
	c, err := s.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	if err := errors.Join(
		validate.Name("name", req.GetName(), true),
		validate.Text("notice", req.GetNotice(), validate.MaxNoticeBytes, false),
		validate.Settings("settings", req.GetSettings()),
	); err != nil {
		return nil, err
	}
	now := timestamppb.New(s.cfg.Now())
	g := &recordv1.Group{
		Id:         ids.New(ids.Group),
		Name:       req.GetName(),
		Notice:     req.GetNotice(),
		Settings:   maps.Clone(req.GetSettings()),
		Members:    []*recordv1.Member{c.member()},
		HomeRegion: s.cfg.Region,
		Version:    1,
		CreatedAt:  now,
		UpdatedAt:  now,
		OwnerId:    c.userID,
	}
	g.Members[0].JoinedAt = now
	if err := s.store.CreateGroup(g); err != nil {
		return nil, err
	}
	return &clientv1.CreateGroupResponse{Group: groupToClient(g)}, nil
}

// GetGroup returns a group's data to one of its members, from its home.
func (s *Server) GetGroup(ctx context.Context, req *clientv1.GetGroupRequest) (*clientv1.GetGroupResponse, error) {
	c, err := s.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	if err := validate.ID("group_id", ids.Group, req.GetGroupId()); err != nil {
		return nil, err
	}
	home, err := s.groupHome(ctx, req.GetGroupId())
	if err != nil {
		return nil, err
	}
	var g *recordv1.Group
	if home == s.cfg.Region {
		g, err = s.home.GetGroup(req.GetGroupId(), c.userID)
	} else {
		g, err = s.roaming.GetGroup(ctx, home, &roamingv1.GetGroupRequest{GroupId: req.GetGroupId(), UserId: c.userID})
	}
	if err != nil {
		return nil, err
	}
	return &clientv1.GetGroupResponse{Group: groupToClient(g)}, nil
}

// UpdateGroup changes a group's name, notice or settings at its home.
func (s *Server) UpdateGroup(ctx context.Context, req *clientv1.UpdateGroupRequest) (*clientv1.UpdateGroupResponse, error) {
	c, err := s.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	change := &roamingv1.GroupChange{
		Name:            req.Name,
		Notice:          req.Notice,
		Settings:        req.GetSettings(),
		ExpectedVersion: req.GetExpectedVersion(),
	}
	// Validate here too, so that bad input is refused without a round
	// trip; the home validates again.
	if err := errors.Join(
		validate.ID("group_id", ids.Group, req.GetGroupId()),
		validateOptional(req.Name, func(v string) error { return validate.Name("name", v, true) }),
		validateOptional(req.Notice, func(v string) error { return validate.Text("notice", v, validate.MaxNoticeBytes, false) }),
		validate.Settings("settings", req.GetSettings()),
	); err != nil {
		return nil, err
	}
	g, err := s.storeGroup(ctx, &roamingv1.StoreGroupRequest{
		GroupId: req.GetGroupId(),
		UserId:  c.userID,
		Change:  &roamingv1.StoreGroupRequest_Update{Update: change},
	})
	if err != nil {
		return nil, err
	}
	return &clientv1.UpdateGroupResponse{Group: groupToClient(g)}, nil
}

// JoinGroup adds the caller to a group. Joining a group one is already a
// member of changes nothing.
func (s *Server) JoinGroup(ctx context.Context, req *clientv1.JoinGroupRequest) (*clientv1.JoinGroupResponse, error) {
	c, err := s.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	if err := validate.ID("group_id", ids.Group, req.GetGroupId()); err != nil {
		return nil, err
	}
	g, err := s.storeGroup(ctx, &roamingv1.StoreGroupRequest{
		GroupId: req.GetGroupId(),
		UserId:  c.userID,
		Change:  &roamingv1.StoreGroupRequest_Join{Join: c.member()},
	})
	if err != nil {
		return nil, err
	}
	s.watchGroup(c.userID, g)
	return &clientv1.JoinGroupResponse{Group: groupToClient(g)}, nil
}

// LeaveGroup removes the caller from a group.
func (s *Server) LeaveGroup(ctx context.Context, req *clientv1.LeaveGroupRequest) (*clientv1.LeaveGroupResponse, error) {
	c, err := s.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	if err := validate.ID("group_id", ids.Group, req.GetGroupId()); err != nil {
		return nil, err
	}
	if _, err := s.storeGroup(ctx, &roamingv1.StoreGroupRequest{
		GroupId: req.GetGroupId(),
		UserId:  c.userID,
		Change:  &roamingv1.StoreGroupRequest_Leave{Leave: true},
	}); err != nil {
		return nil, err
	}
	return &clientv1.LeaveGroupResponse{}, nil
}

// storeGroup sends a change to the group's home.
func (s *Server) storeGroup(ctx context.Context, req *roamingv1.StoreGroupRequest) (*recordv1.Group, error) {
	home, err := s.groupHome(ctx, req.GetGroupId())
	if err != nil {
		return nil, err
	}
	if home == s.cfg.Region {
		return s.home.StoreGroup(req)
	}
	return s.roaming.StoreGroup(ctx, home, req)
}

// ListGroups lists the caller's groups, wherever they are homed.
func (s *Server) ListGroups(ctx context.Context, _ *clientv1.ListGroupsRequest) (*clientv1.ListGroupsResponse, error) {
	c, err := s.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	groups, err := s.userGroups(ctx, c.userID)
	if err != nil {
		return nil, err
	}
	resp := &clientv1.ListGroupsResponse{}
	for _, ug := range groups {
		g := ug.GetGroup()
		// Acknowledgements are recorded where the session is, so the
		// cursor kept here may be ahead of the home's.
		read, err := s.store.CursorOf(c.userID, g.GetId())
		if err != nil {
			return nil, err
		}
		resp.Groups = append(resp.Groups, &clientv1.GroupSummary{
			Id:          g.GetId(),
			Name:        g.GetName(),
			HomeRegion:  g.GetHomeRegion(),
			Version:     g.GetVersion(),
			MemberCount: uint32(len(g.GetMembers())),
			LastSeq:     ug.GetLastSeq(),
			ReadSeq:     min(max(read, ug.GetReadSeq()), ug.GetLastSeq()),
		})
	}
	return resp, nil
}

// userGroups returns a user's groups from every region.
func (s *Server) userGroups(ctx context.Context, userID string) ([]*roamingv1.UserGroup, error) {
	groups, err := s.home.UserGroups(userID)
	if err != nil {
		return nil, err
	}
	if s.roaming != nil {
		remote, err := s.roaming.ListUserGroups(ctx, userID)
		if err != nil {
			return nil, err
		}
		groups = append(groups, remote...)
	}
	return groups, nil
}

// groupHome returns the home region of a group.
func (s *Server) groupHome(ctx context.Context, groupID string) (string, error) {
	rec, err := s.locate(ctx, roamingv1.DirectoryKind_DIRECTORY_KIND_GROUP, groupID)
	if errors.Is(err, datacenter.ErrNotInDirectory) {
		return "", fmt.Errorf("group %s: %w", groupID, datacenter.ErrGroupNotFound)
	}
	if err != nil {
		return "", err
	}
	return rec.GetHomeRegion(), nil
}

// locate looks a record up in the home directory, asking the peers on a
// miss when the region is federated.
func (s *Server) locate(ctx context.Context, kind roamingv1.DirectoryKind, key string) (*roamingv1.DirectoryRecord, error) {
	if s.roaming != nil {
		return s.roaming.Locate(ctx, kind, key)
	}
	return s.store.Locate(kind, key)
}
