package businesscenter

import (
	"context"
	"errors"
	"fmt"
	"maps"

	"google.golang.org/protobuf/types/known/timestamppb"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	recordv1 "github.com/roamfed/roamfed/api/record/v1"
	"github.com/roamfed/roamfed/internal/ids"
	"github.com/roamfed/roamfed/internal/validate"
	"github.com/roamfed/roamfed/servicecenter/datacenter"
)

// CreateGroup creates a group homed here with the caller as owner and
// first member.
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
	u, err := s.store.User(c.userID)
	if err != nil {
		return nil, err
	}
	now := timestamppb.New(s.cfg.Now())
	g := &recordv1.Group{
		Id:         ids.New(ids.Group),
		Name:       req.GetName(),
		Notice:     req.GetNotice(),
		Settings:   maps.Clone(req.GetSettings()),
		Members:    []*recordv1.Member{{UserId: u.GetId(), Name: u.GetName(), HomeRegion: u.GetHomeRegion(), JoinedAt: now}},
		HomeRegion: s.cfg.Region,
		Version:    1,
		CreatedAt:  now,
		UpdatedAt:  now,
		OwnerId:    u.GetId(),
	}
	if err := s.store.CreateGroup(g); err != nil {
		return nil, err
	}
	return &clientv1.CreateGroupResponse{Group: groupToClient(g)}, nil
}

// GetGroup returns a group's data to one of its members.
func (s *Server) GetGroup(ctx context.Context, req *clientv1.GetGroupRequest) (*clientv1.GetGroupResponse, error) {
	c, err := s.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	if err := validate.ID("group_id", ids.Group, req.GetGroupId()); err != nil {
		return nil, err
	}
	g, _, err := s.memberGroup(req.GetGroupId(), c.userID)
	if err != nil {
		return nil, err
	}
	return &clientv1.GetGroupResponse{Group: groupToClient(g)}, nil
}

// UpdateGroup changes a group's name, notice or settings.
func (s *Server) UpdateGroup(ctx context.Context, req *clientv1.UpdateGroupRequest) (*clientv1.UpdateGroupResponse, error) {
	c, err := s.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	if err := errors.Join(
		validate.ID("group_id", ids.Group, req.GetGroupId()),
		validateOptional(req.Name, func(v string) error { return validate.Name("name", v, true) }),
		validateOptional(req.Notice, func(v string) error { return validate.Text("notice", v, validate.MaxNoticeBytes, false) }),
		validate.Settings("settings", req.GetSettings()),
	); err != nil {
		return nil, err
	}
	g, err := s.store.UpdateGroup(req.GetGroupId(), func(g *recordv1.Group) error {
		if !datacenter.IsMember(g, c.userID) {
			return ErrNotMember
		}
		if v := req.GetExpectedVersion(); v != 0 && v != g.GetVersion() {
			return fmt.Errorf("%w: expected %d, now %d", ErrVersionMismatch, v, g.GetVersion())
		}
		if req.Name != nil {
			g.Name = req.GetName()
		}
		if req.Notice != nil {
			g.Notice = req.GetNotice()
		}
		if len(req.GetSettings()) > 0 && g.Settings == nil {
			g.Settings = make(map[string]string)
		}
		for k, v := range req.GetSettings() {
			if v == "" {
				delete(g.Settings, k)
			} else {
				g.Settings[k] = v
			}
		}
		if err := validate.Settings("settings", g.GetSettings()); err != nil {
			return err
		}
		g.UpdatedAt = timestamppb.New(s.cfg.Now())
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("group %s: %w", req.GetGroupId(), err)
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
	g, err := s.store.Group(req.GetGroupId())
	if err != nil {
		return nil, fmt.Errorf("group %s: %w", req.GetGroupId(), err)
	}
	if datacenter.IsMember(g, c.userID) {
		return &clientv1.JoinGroupResponse{Group: groupToClient(g)}, nil
	}
	u, err := s.store.User(c.userID)
	if err != nil {
		return nil, err
	}
	g, err = s.store.UpdateGroup(req.GetGroupId(), func(g *recordv1.Group) error {
		if datacenter.IsMember(g, c.userID) {
			return errAlreadyMember
		}
		now := timestamppb.New(s.cfg.Now())
		g.Members = append(g.Members, &recordv1.Member{UserId: u.GetId(), Name: u.GetName(), HomeRegion: u.GetHomeRegion(), JoinedAt: now})
		g.UpdatedAt = now
		return nil
	})
	if errors.Is(err, errAlreadyMember) {
		g, err = s.store.Group(req.GetGroupId())
	}
	if err != nil {
		return nil, fmt.Errorf("group %s: %w", req.GetGroupId(), err)
	}
	return &clientv1.JoinGroupResponse{Group: groupToClient(g)}, nil
}

// errAlreadyMember aborts a join that raced with another join.
var errAlreadyMember = errors.New("already a member")

// LeaveGroup removes the caller from a group.
func (s *Server) LeaveGroup(ctx context.Context, req *clientv1.LeaveGroupRequest) (*clientv1.LeaveGroupResponse, error) {
	c, err := s.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	if err := validate.ID("group_id", ids.Group, req.GetGroupId()); err != nil {
		return nil, err
	}
	_, err = s.store.UpdateGroup(req.GetGroupId(), func(g *recordv1.Group) error {
		for i, m := range g.GetMembers() {
			if m.GetUserId() == c.userID {
				g.Members = append(g.Members[:i], g.Members[i+1:]...)
				g.UpdatedAt = timestamppb.New(s.cfg.Now())
				return nil
			}
		}
		return ErrNotMember
	})
	if err != nil {
		return nil, fmt.Errorf("group %s: %w", req.GetGroupId(), err)
	}
	return &clientv1.LeaveGroupResponse{}, nil
}

// ListGroups lists the caller's groups.
func (s *Server) ListGroups(ctx context.Context, _ *clientv1.ListGroupsRequest) (*clientv1.ListGroupsResponse, error) {
	c, err := s.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	gids, err := s.store.GroupsOf(c.userID)
	if err != nil {
		return nil, err
	}
	resp := &clientv1.ListGroupsResponse{}
	for _, id := range gids {
		g, err := s.store.Group(id)
		if err != nil {
			return nil, fmt.Errorf("group %s: %w", id, err)
		}
		last, err := s.store.LastSeq(id)
		if err != nil {
			return nil, err
		}
		read, err := s.store.CursorOf(c.userID, id)
		if err != nil {
			return nil, err
		}
		resp.Groups = append(resp.Groups, &clientv1.GroupSummary{
			Id:          g.GetId(),
			Name:        g.GetName(),
			HomeRegion:  g.GetHomeRegion(),
			Version:     g.GetVersion(),
			MemberCount: uint32(len(g.GetMembers())),
			LastSeq:     last,
			ReadSeq:     min(read, last),
		})
	}
	return resp, nil
}

func validateOptional(v *string, check func(string) error) error {
	if v == nil {
		return nil
	}
	return check(*v)
}
