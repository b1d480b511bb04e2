// Package rpcstatus is the one place where roamfed's domain errors become
// gRPC status codes. Servers install its interceptors; handlers return
// domain errors and never build statuses themselves, except for errors that
// carry their own status (GRPCStatus), such as quota refusals.
package rpcstatus

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/roamfed/roamfed/internal/validate"
	roamingpool "github.com/roamfed/roamfed/roaming/resourcepool"
	"github.com/roamfed/roamfed/servicecenter/businesscenter"
	"github.com/roamfed/roamfed/servicecenter/datacenter"
)

// table maps domain sentinels to codes. The status message is the error's
// own text, which names what was refused.
var table = []struct {
	err  error
	code codes.Code
}{
	{businesscenter.ErrUnauthenticated, codes.Unauthenticated},
	{businesscenter.ErrBadCredentials, codes.Unauthenticated},
	{businesscenter.ErrNotMember, codes.PermissionDenied},
	{businesscenter.ErrVersionMismatch, codes.FailedPrecondition},
	// Two regions registered one username at the same moment; the one
	// that lost may try again in a few seconds.
	{businesscenter.ErrUsernameClaimed, codes.Aborted},
	// The caller asked a region for a user or group that region holds
	// but does not home: its directory is wrong, and asking again will
	// not help. UNAVAILABLE would have peers (and their outboxes) retry
	// forever.
	{businesscenter.ErrNotHomedHere, codes.FailedPrecondition},
	{datacenter.ErrSessionNotFound, codes.Unauthenticated},
	{datacenter.ErrUserExists, codes.AlreadyExists},
	{datacenter.ErrGroupExists, codes.AlreadyExists},
	{datacenter.ErrUserNotFound, codes.NotFound},
	{datacenter.ErrGroupNotFound, codes.NotFound},
	{datacenter.ErrClosed, codes.Unavailable},
	{datacenter.ErrCorrupt, codes.DataLoss},
	// The outbox for a region is at its bound: cross-region work is
	// refused, never dropped, until it drains.
	{datacenter.ErrOutboxFull, codes.ResourceExhausted},
	{datacenter.ErrNotInDirectory, codes.NotFound},
	{datacenter.ErrDirectoryIncomplete, codes.Unavailable},
	{roamingpool.ErrUnknownPeer, codes.FailedPrecondition},
}

// statusError is an error that carries its own status.
type statusError interface {
	error
	GRPCStatus() *status.Status
}

// Convert turns err into a status error. A nil error stays nil; errors that
// already carry a status keep it; unknown errors become INTERNAL, logged
// with their text but not shown to the caller.
func Convert(log *slog.Logger, method string, err error) error {
	if err == nil {
		return nil
	}
	if se, ok := errors.AsType[statusError](err); ok {
		return se.GRPCStatus().Err()
	}
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	if v := fieldViolations(err); len(v) > 0 {
		st, derr := status.New(codes.InvalidArgument, err.Error()).WithDetails(&errdetails.BadRequest{FieldViolations: v})
		if derr != nil {
			return status.Error(codes.InvalidArgument, err.Error())
		}
		return st.Err()
	}
	for _, e := range table {
		if errors.Is(err, e.err) {
			return status.Error(e.code, err.Error())
		}
	}
	log.Error("internal error", slog.String("method", method), slog.Any("err", err))
	return status.Error(codes.Internal, "internal error; the region has logged it")
}

// fieldViolations collects every validation failure in err's tree.
func fieldViolations(err error) []*errdetails.BadRequest_FieldViolation {
	var out []*errdetails.BadRequest_FieldViolation
	var walk func(error)
	walk = func(e error) {
		if ve, ok := e.(*validate.Error); ok {
			out = append(out, &errdetails.BadRequest_FieldViolation{Field: ve.Field, Description: ve.Reason})
			return
		}
		switch u := e.(type) {
		case interface{ Unwrap() []error }:
			for _, c := range u.Unwrap() {
				walk(c)
			}
		case interface{ Unwrap() error }:
			if c := u.Unwrap(); c != nil {
				walk(c)
			}
		}
	}
	walk(err)
	return out
}

// UnaryServerInterceptor converts the errors of unary handlers.
func UnaryServerInterceptor(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		return resp, Convert(log, info.FullMethod, err)
	}
}

// StreamServerInterceptor converts the errors of streaming handlers.
func StreamServerInterceptor(log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return Convert(log, info.FullMethod, handler(srv, ss))
	}
}
