package rpcstatus_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/roamfed/roamfed/api/rpcstatus"
	"github.com/roamfed/roamfed/internal/quota"
	"github.com/roamfed/roamfed/internal/validate"
	roamingpool "github.com/roamfed/roamfed/roaming/resourcepool"
	"github.com/roamfed/roamfed/servicecenter/businesscenter"
	"github.com/roamfed/roamfed/servicecenter/datacenter"
	"github.com/roamfed/roamfed/servicecenter/resourcepool"
)

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestConvertSentinels(t *testing.T) {
	tests := []struct {
		err  error
		want codes.Code
	}{
		{businesscenter.ErrUnauthenticated, codes.Unauthenticated},
		{businesscenter.ErrBadCredentials, codes.Unauthenticated},
		{businesscenter.ErrNotMember, codes.PermissionDenied},
		{businesscenter.ErrVersionMismatch, codes.FailedPrecondition},
		{businesscenter.ErrNotHomedHere, codes.FailedPrecondition},
		{datacenter.ErrSessionNotFound, codes.Unauthenticated},
		{datacenter.ErrUserExists, codes.AlreadyExists},
		{datacenter.ErrGroupExists, codes.AlreadyExists},
		{datacenter.ErrUserNotFound, codes.NotFound},
		{datacenter.ErrGroupNotFound, codes.NotFound},
		{datacenter.ErrClosed, codes.Unavailable},
		{datacenter.ErrCorrupt, codes.DataLoss},
		{datacenter.ErrOutboxFull, codes.ResourceExhausted},
		{datacenter.ErrNotInDirectory, codes.NotFound},
		{datacenter.ErrDirectoryIncomplete, codes.Unavailable},
		{roamingpool.ErrUnknownPeer, codes.FailedPrecondition},
	}
	for _, tt := range tests {
		t.Run(tt.err.Error(), func(t *testing.T) {
			for _, err := range []error{
				tt.err,
				fmt.Errorf("group g_1: %w", tt.err),
				fmt.Errorf("outer: %w", fmt.Errorf("inner: %w", tt.err)),
			} {
				got := rpcstatus.Convert(discard(), "/test/Method", err)
				st := status.Convert(got)
				if st.Code() != tt.want {
					t.Errorf("Convert(%q) = %v, want %v", err, st.Code(), tt.want)
				}
				// The message is the error's own text, which names what
				// was refused.
				if st.Message() != err.Error() {
					t.Errorf("Convert(%q) says %q", err, st.Message())
				}
			}
		})
	}
}

func TestConvertNil(t *testing.T) {
	if err := rpcstatus.Convert(discard(), "/test/Method", nil); err != nil {
		t.Errorf("Convert(nil) = %v", err)
	}
}

func TestConvertContext(t *testing.T) {
	tests := []struct {
		err  error
		want codes.Code
	}{
		{context.Canceled, codes.Canceled},
		{fmt.Errorf("append: %w", context.Canceled), codes.Canceled},
		{context.DeadlineExceeded, codes.DeadlineExceeded},
		{fmt.Errorf("append: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
	}
	for _, tt := range tests {
		if got := status.Code(rpcstatus.Convert(discard(), "/test/Method", tt.err)); got != tt.want {
			t.Errorf("Convert(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
	// A real cancelled context, as a handler would see it.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if got := status.Code(rpcstatus.Convert(discard(), "/test/Method", ctx.Err())); got != codes.Canceled {
		t.Errorf("Convert(ctx.Err()) = %v, want Canceled", got)
	}
	ctx, cancel = context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	if got := status.Code(rpcstatus.Convert(discard(), "/test/Method", ctx.Err())); got != codes.DeadlineExceeded {
		t.Errorf("Convert(ctx.Err()) = %v, want DeadlineExceeded", got)
	}
}

func TestConvertValidation(t *testing.T) {
	username := validate.Username("username", "a b")
	password := validate.Password("password", "short")
	name := validate.Name("display_name", "two\nlines", false)
	for _, err := range []error{username, password, name} {
		if err == nil {
			t.Fatal("the validation errors this test relies on are not errors")
		}
	}

	tests := []struct {
		name       string
		err        error
		wantFields []string
	}{
		{"one", username, []string{"username"}},
		{"wrapped", fmt.Errorf("register: %w", username), []string{"username"}},
		{"joined", errors.Join(username, password, name), []string{"username", "password", "display_name"}},
		{"joined with nils", errors.Join(nil, username, nil, password, nil), []string{"username", "password"}},
		{"wrapped join", fmt.Errorf("register: %w", errors.Join(username, password)), []string{"username", "password"}},
		{"nested joins", errors.Join(errors.Join(username), fmt.Errorf("x: %w", errors.Join(password, name))), []string{"username", "password", "display_name"}},
		{"several %w", fmt.Errorf("%w; %w", username, password), []string{"username", "password"}},
		// A validation failure wins over a sentinel it is joined with:
		// the caller has something to fix.
		{"with a sentinel", errors.Join(businesscenter.ErrNotMember, username), []string{"username"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := rpcstatus.Convert(discard(), "/test/Method", tt.err)
			st := status.Convert(got)
			if st.Code() != codes.InvalidArgument {
				t.Fatalf("code %v, want InvalidArgument", st.Code())
			}
			var br *errdetails.BadRequest
			for _, d := range st.Details() {
				if b, ok := d.(*errdetails.BadRequest); ok {
					br = b
				}
			}
			if br == nil {
				t.Fatalf("details %v, want a BadRequest", st.Details())
			}
			var fields []string
			for _, v := range br.GetFieldViolations() {
				fields = append(fields, v.GetField())
				if v.GetDescription() == "" {
					t.Errorf("violation of %s has no description", v.GetField())
				}
			}
			if !slices.Equal(fields, tt.wantFields) {
				t.Errorf("fields %q, want %q", fields, tt.wantFields)
			}
		})
	}
}

func TestConvertUnknownIsInternal(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	secret := errors.New("pebble: open /var/lib/roamfed/secret-path/MANIFEST: permission denied")
	for _, err := range []error{secret, fmt.Errorf("commit: %w", secret)} {
		logs.Reset()
		got := rpcstatus.Convert(log, "/client.v1.ClientService/SendMessage", err)
		st := status.Convert(got)
		if st.Code() != codes.Internal {
			t.Errorf("Convert(%v) = %v, want Internal", err, st.Code())
		}
		if strings.Contains(st.Message(), "secret-path") || strings.Contains(st.Message(), "pebble") {
			t.Errorf("Internal status leaks the error: %q", st.Message())
		}
		if len(st.Details()) != 0 {
			t.Errorf("Internal status has details %v", st.Details())
		}
		// The operator gets what the caller does not.
		if !strings.Contains(logs.String(), "secret-path") || !strings.Contains(logs.String(), "SendMessage") {
			t.Errorf("log %q lacks the error or the method", logs.String())
		}
	}
}

func TestConvertKeepsStatus(t *testing.T) {
	pool := resourcepool.New(resourcepool.Limits{MaxMessageBytes: 10, SendRate: 1, SendBurst: 1})
	sizeErr := pool.CheckMessageSize("user:u_1", 11)
	if sizeErr == nil {
		t.Fatal("CheckMessageSize accepted 11 bytes with a limit of 10")
	}
	if err := pool.AllowSend("u_1"); err != nil {
		t.Fatalf("first AllowSend: %v", err)
	}
	rateErr := pool.AllowSend("u_1")
	if rateErr == nil {
		t.Fatal("second AllowSend with a burst of 1 was allowed")
	}

	tests := []struct {
		name      string
		err       error
		wantQuota resourcepool.Reason
		wantRetry bool
	}{
		{"message size", sizeErr, resourcepool.ReasonMessageSize, false},
		{"wrapped message size", fmt.Errorf("send: %w", sizeErr), resourcepool.ReasonMessageSize, false},
		{"send rate", rateErr, resourcepool.ReasonSendRate, true},
		{"wrapped send rate", fmt.Errorf("send: %w", rateErr), resourcepool.ReasonSendRate, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := status.Convert(rpcstatus.Convert(discard(), "/test/Method", tt.err))
			if st.Code() != codes.ResourceExhausted {
				t.Fatalf("code %v, want ResourceExhausted", st.Code())
			}
			qf, ri := quota.Details(st)
			if qf == nil || len(qf.GetViolations()) != 1 {
				t.Fatalf("QuotaFailure = %v, want one violation", qf)
			}
			if v := qf.GetViolations()[0]; v.GetQuotaId() != string(tt.wantQuota) || v.GetSubject() != "user:u_1" || v.GetDescription() == "" {
				t.Errorf("violation = %v", v)
			}
			if (ri != nil) != tt.wantRetry {
				t.Errorf("RetryInfo = %v, want present %v", ri, tt.wantRetry)
			}
			if ri != nil && ri.GetRetryDelay().AsDuration() <= 0 {
				t.Errorf("retry delay %v", ri.GetRetryDelay().AsDuration())
			}
		})
	}

	// Any error with its own status keeps it.
	drain := fmt.Errorf("session: %w", businesscenter.ErrDraining)
	if st := status.Convert(rpcstatus.Convert(discard(), "/test/Method", drain)); st.Code() != codes.Unavailable ||
		st.Message() != status.Convert(businesscenter.ErrDraining).Message() {
		t.Errorf("Convert(%v) = %v", drain, st)
	}
}

func TestInterceptors(t *testing.T) {
	unary := rpcstatus.UnaryServerInterceptor(discard())
	info := &grpc.UnaryServerInfo{FullMethod: "/client.v1.ClientService/GetGroup"}
	resp, err := unary(context.Background(), "req", info, func(context.Context, any) (any, error) {
		return nil, fmt.Errorf("group g_1: %w", businesscenter.ErrNotMember)
	})
	if resp != nil || status.Code(err) != codes.PermissionDenied {
		t.Errorf("unary error: resp %v err %v, want PermissionDenied", resp, err)
	}
	resp, err = unary(context.Background(), "req", info, func(_ context.Context, req any) (any, error) {
		return req.(string) + " ok", nil
	})
	if resp != "req ok" || err != nil {
		t.Errorf("unary success: resp %v err %v", resp, err)
	}

	stream := rpcstatus.StreamServerInterceptor(discard())
	sinfo := &grpc.StreamServerInfo{FullMethod: "/client.v1.ClientService/Session", IsClientStream: true, IsServerStream: true}
	err = stream(nil, nil, sinfo, func(any, grpc.ServerStream) error { return businesscenter.ErrUnauthenticated })
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("stream error: %v, want Unauthenticated", err)
	}
	if err := stream(nil, nil, sinfo, func(any, grpc.ServerStream) error { return nil }); err != nil {
		t.Errorf("stream success: %v", err)
	}
}
