package businesscenter

import (
	"context"

	recordv1 "github.com/roamfed/roamfed/api/record/v1"
	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
	"github.com/roamfed/roamfed/servicecenter/datacenter"
)

// Roaming is this region's roaming system as its service center uses it:
// the only way the service center reaches another region. A Server without
// one serves a region on its own.
//
// Errors that a peer region returned keep their gRPC status, so that a
// client sees the home's refusal as the home gave it.
type Roaming interface {
	// Locate finds where a user, username or group lives: in the local
	// home directory first, then by asking the peers.
	Locate(ctx context.Context, kind roamingv1.DirectoryKind, key string) (*roamingv1.DirectoryRecord, error)
	GetGroup(ctx context.Context, home string, req *roamingv1.GetGroupRequest) (*recordv1.Group, error)
	StoreGroup(ctx context.Context, home string, req *roamingv1.StoreGroupRequest) (*recordv1.Group, error)
	// Submit has the group's home commit a message. It returns
	// ErrAccepted (with the message, without a seq) when the message is
	// safe in the outbox but not committed yet; its outcome then comes
	// later through Server.Receipt.
	Submit(ctx context.Context, home string, m *recordv1.Message) (datacenter.Appended, error)
	FetchHistory(ctx context.Context, home string, req *roamingv1.FetchHistoryRequest) (*roamingv1.FetchHistoryResponse, error)
	VerifyLogin(ctx context.Context, home string, req *roamingv1.VerifyLoginRequest) (*recordv1.User, error)
	// UpdateLocation queues a location update for a user's home.
	UpdateLocation(ctx context.Context, home string, req *roamingv1.UpdateLocationRequest) error
	// ClaimUsername asks every peer to let this region register a
	// username: it fails with ErrUserExists when a peer knows a user by
	// that name and ErrUsernameClaimed when a peer let another region
	// claim it. A peer that does not answer is not waited for.
	ClaimUsername(ctx context.Context, username string) error
	// ListUserGroups asks every peer for the user's groups homed there.
	ListUserGroups(ctx context.Context, userID string) ([]*roamingv1.UserGroup, error)
	// Committed hands messages just committed here, to groups homed here,
	// to the roaming system for delivery to other regions. It is called
	// in commit order and must not block.
	Committed(g *recordv1.Group, m *recordv1.Message)
	// Presence hands a presence change of a local user to the roaming
	// system for the other regions. It must not block.
	Presence(ch *recordv1.PresenceChange)
}
