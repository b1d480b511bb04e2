package stack

import (
	"context"
	"crypto/subtle"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/roamfed/roamfed/api/admin/v1"
	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
	"github.com/roamfed/roamfed/api/rpcstatus"
	"github.com/roamfed/roamfed/roaming/dataservice"
)

// adminServer implements the operator API for one region.
type adminServer struct {
	adminv1.UnimplementedAdminServiceServer
	st      *Stack
	started time.Time
}

var _ adminv1.AdminServiceServer = (*adminServer)(nil)

// startAdmin listens on the admin address with its own gRPC server, which
// requires the admin token on every call but health checks.
func (s *Stack) startAdmin() error {
	lis, err := net.Listen("tcp", s.cfg.AdminAddr)
	if err != nil {
		return fmt.Errorf("listen admin %s: %w", s.cfg.AdminAddr, err)
	}
	token := []byte(s.cfg.AdminToken)
	auth := func(ctx context.Context, method string) error {
		if strings.HasPrefix(method, "/grpc.health.v1.Health/") {
			return nil
		}
		md, _ := metadata.FromIncomingContext(ctx)
		vals := md.Get("authorization")
		if len(vals) != 1 {
			return status.Error(codes.Unauthenticated, "admin: send `authorization: Bearer <admin token>`")
		}
		got, ok := strings.CutPrefix(vals[0], "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), token) != 1 {
			return status.Error(codes.Unauthenticated, "admin: wrong admin token")
		}
		return nil
	}
	s.admin = grpc.NewServer(
		grpc.ChainUnaryInterceptor(
			func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
				if err := auth(ctx, info.FullMethod); err != nil {
					return nil, err
				}
				return handler(ctx, req)
			},
			rpcstatus.UnaryServerInterceptor(s.log)),
		grpc.ChainStreamInterceptor(
			func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
				if err := auth(ss.Context(), info.FullMethod); err != nil {
					return err
				}
				return handler(srv, ss)
			},
			rpcstatus.StreamServerInterceptor(s.log)),
	)
	adminv1.RegisterAdminServiceServer(s.admin, &adminServer{st: s, started: time.Now()})
	hs := health.NewServer()
	healthpb.RegisterHealthServer(s.admin, hs)
	reflection.Register(s.admin)
	s.adminLis = lis
	go func() {
		if err := s.admin.Serve(lis); err != nil {
			s.log.Error("admin listener failed", slog.Any("err", err))
		}
	}()
	s.log.Info("admin API serving", slog.String("addr", lis.Addr().String()))
	return nil
}

// AdminAddr is the admin listener's address; empty when there is none.
func (s *Stack) AdminAddr() string {
	if s.adminLis == nil {
		return ""
	}
	return s.adminLis.Addr().String()
}

func (a *adminServer) Status(context.Context, *adminv1.StatusRequest) (*adminv1.StatusResponse, error) {
	st := a.st
	resp := &adminv1.StatusResponse{Region: st.cfg.Region, StartedAt: timestamppb.New(a.started)}
	if st.roam != nil {
		resp.Federation = st.roam.Federation().Name
		for _, p := range st.roam.Status() {
			resp.Links = append(resp.Links, &adminv1.Link{
				Peer:              p.Peer,
				State:             p.State,
				RttMicros:         uint64(p.RTT.Microseconds()),
				LastError:         p.LastError,
				Since:             timestamppb.New(p.Since),
				Via:               p.Via,
				NoRoute:           p.NoRoute,
				Downs:             p.Downs,
				OutboxItems:       uint64(p.OutboxItems),
				OutboxBytes:       uint64(p.OutboxBytes),
				QueuedDeliveries:  uint64(p.QueuedDeliveries),
				WindowBatches:     uint32(p.Window.Batches),
				WindowBytes:       uint64(p.Window.Bytes),
				RateRefused:       p.RateRefused,
				DirectoryRefused:  p.DirectoryRefused,
				IntegrityFailures: p.IntegrityFailures,
			})
		}
	}
	u := st.pool.Usage()
	resp.Resources = &adminv1.ResourceUsage{Sessions: uint32(u.Sessions), MaxSessions: uint32(u.MaxSessions), Refused: make(map[string]uint64)}
	for r, n := range u.Refused {
		resp.Resources.Refused[string(r)] = n
	}
	return resp, nil
}

// peerOf checks that a drill names a link of this region and returns the
// other end.
func (a *adminServer) peerOf(x, y string) (string, error) {
	self := a.st.cfg.Region
	if a.st.roam == nil {
		return "", status.Error(codes.FailedPrecondition, "this region is not federated; it has no links")
	}
	switch {
	case x == self && y != self:
		return y, nil
	case y == self && x != self:
		return x, nil
	}
	return "", status.Errorf(codes.InvalidArgument, "a drill on %s-%s must be asked of one of its ends; this is %s", x, y, self)
}

func (a *adminServer) CutLink(ctx context.Context, req *adminv1.CutLinkRequest) (*adminv1.CutLinkResponse, error) {
	peer, err := a.peerOf(req.GetA(), req.GetB())
	if err != nil {
		return nil, err
	}
	if err := a.st.roam.CutLink(ctx, peer, req.GetReason()); err != nil {
		return nil, status.Errorf(codes.Unavailable, "%v", err)
	}
	a.st.log.Info("drill: link cut", slog.String("peer", peer), slog.String("reason", req.GetReason()))
	return &adminv1.CutLinkResponse{Drill: a.drill(req.GetA(), req.GetB(), "cut", req.GetReason())}, nil
}

func (a *adminServer) RestoreLink(ctx context.Context, req *adminv1.RestoreLinkRequest) (*adminv1.RestoreLinkResponse, error) {
	peer, err := a.peerOf(req.GetA(), req.GetB())
	if err != nil {
		return nil, err
	}
	up, err := a.st.roam.RestoreLink(ctx, peer, req.GetReason())
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "%v", err)
	}
	if up {
		a.st.log.Info("drill: link restored", slog.String("peer", peer), slog.String("reason", req.GetReason()))
	} else {
		// The restore is done at both ends; only the heartbeat has not
		// seen the link up yet. Answering an error would have the
		// operator restore again, which changes nothing.
		a.st.log.Warn("drill: link restored, but not seen up yet", slog.String("peer", peer), slog.String("reason", req.GetReason()))
	}
	return &adminv1.RestoreLinkResponse{Drill: a.drill(req.GetA(), req.GetB(), "restore", req.GetReason()), LinkUp: up}, nil
}

func (a *adminServer) drill(x, y, action, reason string) *adminv1.Drill {
	return &adminv1.Drill{A: x, B: y, Action: action, At: timestamppb.Now(), Reason: reason, RequestedAt: a.st.cfg.Region}
}

func (a *adminServer) ListDrills(context.Context, *adminv1.ListDrillsRequest) (*adminv1.ListDrillsResponse, error) {
	resp := &adminv1.ListDrillsResponse{}
	if a.st.roam == nil {
		return resp, nil
	}
	for _, d := range a.st.roam.Mesh().Drills() {
		action := "restore"
		if d.Cut {
			action = "cut"
		}
		ends := []string{a.st.cfg.Region, d.Peer}
		slices.Sort(ends)
		resp.Drills = append(resp.Drills, &adminv1.Drill{
			A: ends[0], B: ends[1], Action: action, At: timestamppb.New(d.At), Reason: d.Reason, RequestedAt: a.st.cfg.Region,
		})
	}
	return resp, nil
}

func (a *adminServer) Resync(ctx context.Context, _ *adminv1.ResyncRequest) (*adminv1.ResyncResponse, error) {
	if a.st.roam == nil {
		return &adminv1.ResyncResponse{Results: []*roamingv1.ResyncResult{dataservice.ResyncLocal(a.st.cfg.Region, a.st.store)}}, nil
	}
	return &adminv1.ResyncResponse{Results: a.st.roam.ResyncAll(ctx)}, nil
}
