package dataservice

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
	"github.com/roamfed/roamfed/internal/validate"
	"github.com/roamfed/roamfed/roaming/resourcepool"
	"github.com/roamfed/roamfed/servicecenter/businesscenter"
	"github.com/roamfed/roamfed/servicecenter/datacenter"
)

// Limits on what one call may ask for.
const (
	maxLocateKeys = 1024
)

// Server answers other regions' DataService calls for what this region
// homes.
type Server struct {
	roamingv1.UnimplementedDataServiceServer
	region string
	store  *datacenter.Store
	home   *businesscenter.Home
	auth   *Authorizer
}

var _ roamingv1.DataServiceServer = (*Server)(nil)

// NewServer returns a DataService server for region. auth checks that a
// peer may act for the user it names.
func NewServer(region string, store *datacenter.Store, home *businesscenter.Home, auth *Authorizer) *Server {
	return &Server{region: region, store: store, home: home, auth: auth}
}

// actsFor checks that the calling region may act for userID.
func (s *Server) actsFor(ctx context.Context, userID string) error {
	caller, err := resourcepool.RegionFromContext(ctx)
	if err != nil {
		return err
	}
	return s.auth.Check(ctx, caller, userID)
}

// Locate answers from this region's home directory, its own records and
// those it holds of its peers.
func (s *Server) Locate(_ context.Context, req *roamingv1.LocateRequest) (*roamingv1.LocateResponse, error) {
	if len(req.GetKeys()) > maxLocateKeys {
		return nil, status.Errorf(codes.InvalidArgument, "locate: %d keys; at most %d", len(req.GetKeys()), maxLocateKeys)
	}
	resp := &roamingv1.LocateResponse{}
	for _, k := range req.GetKeys() {
		rec, err := s.store.Locate(k.GetKind(), k.GetKey())
		if errors.Is(err, datacenter.ErrNotInDirectory) {
			continue
		}
		if err != nil {
			return nil, err
		}
		resp.Records = append(resp.Records, rec)
	}
	return resp, nil
}

// GetGroup returns a group homed here to one of its members.
func (s *Server) GetGroup(ctx context.Context, req *roamingv1.GetGroupRequest) (*roamingv1.GetGroupResponse, error) {
	if err := s.actsFor(ctx, req.GetUserId()); err != nil {
		return nil, err
	}
	g, err := s.home.GetGroup(req.GetGroupId(), req.GetUserId())
	if err != nil {
		return nil, err
	}
	return &roamingv1.GetGroupResponse{Group: g}, nil
}

// StoreGroup applies a change to a group homed here.
func (s *Server) StoreGroup(ctx context.Context, req *roamingv1.StoreGroupRequest) (*roamingv1.StoreGroupResponse, error) {
	if err := s.actsFor(ctx, req.GetUserId()); err != nil {
		return nil, err
	}
	g, err := s.home.StoreGroup(req)
	if err != nil {
		return nil, err
	}
	return &roamingv1.StoreGroupResponse{Group: g}, nil
}

// VerifyLogin checks the credentials of a user homed here.
func (s *Server) VerifyLogin(ctx context.Context, req *roamingv1.VerifyLoginRequest) (*roamingv1.VerifyLoginResponse, error) {
	caller, err := resourcepool.RegionFromContext(ctx)
	if err != nil {
		return nil, err
	}
	u, err := s.home.VerifyLoginFor(ctx, req.GetUsername(), req.GetPassword(), caller)
	if err != nil {
		return nil, err
	}
	return &roamingv1.VerifyLoginResponse{User: u}, nil
}

// UpdateLocation records where a user homed here is connected. A region
// may only say that a user is (or is no longer) connected to itself.
func (s *Server) UpdateLocation(ctx context.Context, req *roamingv1.UpdateLocationRequest) (*roamingv1.UpdateLocationResponse, error) {
	caller, err := resourcepool.RegionFromContext(ctx)
	if err != nil {
		return nil, err
	}
	if req.GetRegion() != caller {
		return nil, status.Errorf(codes.PermissionDenied, "region %s cannot set a location in region %q", caller, req.GetRegion())
	}
	if err := s.auth.Check(ctx, caller, req.GetUserId()); err != nil {
		return nil, err
	}
	if err := s.home.SetLocation(req.GetUserId(), req.GetRegion(), req.GetOnline()); err != nil {
		return nil, err
	}
	return &roamingv1.UpdateLocationResponse{}, nil
}

// ReplicateDirectory answers with what changed in this region's own
// directory batches since the versions the caller holds.
func (s *Server) ReplicateDirectory(_ context.Context, req *roamingv1.ReplicateDirectoryRequest) (*roamingv1.ReplicateDirectoryResponse, error) {
	for _, h := range req.GetHeld() {
		if h.GetBatch() >= datacenter.DirectoryBatches {
			return nil, status.Errorf(codes.InvalidArgument, "held batch %d out of range [0,%d)", h.GetBatch(), datacenter.DirectoryBatches)
		}
	}
	own, err := s.store.DirectoryVersions(s.region)
	if err != nil {
		return nil, err
	}
	updates, err := Delta(own, req.GetHeld(), func(batch uint32) ([]*roamingv1.DirectoryRecord, error) {
		_, recs, err := s.store.DirectoryBatchRecords(s.region, batch)
		return recs, err
	})
	if err != nil {
		return nil, fmt.Errorf("directory delta: %w", err)
	}
	return &roamingv1.ReplicateDirectoryResponse{Region: s.region, Batches: datacenter.DirectoryBatches, Updates: updates}, nil
}

// FetchHistory returns a group's messages to one of its members.
func (s *Server) FetchHistory(ctx context.Context, req *roamingv1.FetchHistoryRequest) (*roamingv1.FetchHistoryResponse, error) {
	if err := s.actsFor(ctx, req.GetUserId()); err != nil {
		return nil, err
	}
	return s.home.History(req)
}

// ListUserGroups returns the groups homed here that a user is a member of.
func (s *Server) ListUserGroups(ctx context.Context, req *roamingv1.ListUserGroupsRequest) (*roamingv1.ListUserGroupsResponse, error) {
	if err := s.actsFor(ctx, req.GetUserId()); err != nil {
		return nil, err
	}
	groups, err := s.home.UserGroups(req.GetUserId())
	if err != nil {
		return nil, err
	}
	return &roamingv1.ListUserGroupsResponse{Groups: groups}, nil
}

// Resync checks this region's published home records against its data
// center and republishes corrections.
func (s *Server) Resync(context.Context, *roamingv1.ResyncRequest) (*roamingv1.ResyncResponse, error) {
	return &roamingv1.ResyncResponse{Result: ResyncLocal(s.region, s.store)}, nil
}

// ResyncLocal runs a resync on store and reports it.
func ResyncLocal(region string, store *datacenter.Store) *roamingv1.ResyncResult {
	r, err := store.ResyncDirectory()
	out := &roamingv1.ResyncResult{Region: region, Checked: uint64(r.Checked), Corrected: uint64(r.Corrected), Removed: uint64(r.Removed)}
	if err != nil {
		out.Error = err.Error()
	}
	return out
}

// AuthorizeUser answers for a user homed here whether a region may act for
// the user.
func (s *Server) AuthorizeUser(_ context.Context, req *roamingv1.AuthorizeUserRequest) (*roamingv1.AuthorizeUserResponse, error) {
	until, ok, err := s.home.Authorize(req.GetUserId(), req.GetRegion())
	if err != nil {
		return nil, err
	}
	return &roamingv1.AuthorizeUserResponse{Allowed: ok, Until: timestamppb.New(until)}, nil
}

// ClaimUsername lets the calling region register a username, unless this
// region knows a user by that name or has let another region claim it.
func (s *Server) ClaimUsername(ctx context.Context, req *roamingv1.ClaimUsernameRequest) (*roamingv1.ClaimUsernameResponse, error) {
	caller, err := resourcepool.RegionFromContext(ctx)
	if err != nil {
		return nil, err
	}
	if err := validate.Username("username", req.GetUsername()); err != nil {
		return nil, err
	}
	if err := s.home.ClaimUsername(req.GetUsername(), caller); err != nil {
		return nil, err
	}
	return &roamingv1.ClaimUsernameResponse{}, nil
}
