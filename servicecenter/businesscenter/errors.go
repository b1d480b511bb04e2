package businesscenter

import (
	"errors"

	"github.com/roamfed/roamfed/servicecenter/resourcepool"
)

// Domain errors of the client service.
var (
	// ErrUnauthenticated means the call has no valid session token.
	ErrUnauthenticated = errors.New("missing, expired or revoked session token")
	// ErrBadCredentials means the username is unknown or the password wrong;
	// the two are not told apart.
	ErrBadCredentials = errors.New("unknown user or wrong password")
	// ErrNotMember means the caller is not a member of the group.
	ErrNotMember = errors.New("not a member of the group")
	// ErrVersionMismatch means an update named an expected version that the
	// group is no longer at.
	ErrVersionMismatch = errors.New("the group has changed since the expected version")
	// ErrAccepted is what Roaming.Submit returns for a message that is
	// synced in this region's outbox but not yet committed by its home,
	// which it will be when a route exists. It is not a failure.
	ErrAccepted = errors.New("accepted: queued in the outbox until the group's home is reachable")
	// ErrNotHomedHere means the group's home is another region and this
	// region cannot reach it.
	ErrNotHomedHere = errors.New("the group is homed in another region")
)

// quotaError is a limit refusal: RESOURCE_EXHAUSTED with a QuotaFailure
// naming the subject and the limit.
func quotaError(reason, subject, description string) error {
	return &resourcepool.QuotaError{Reason: resourcepool.Reason(reason), Subject: subject, Description: description}
}
