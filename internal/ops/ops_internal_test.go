package ops

import (
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
)

func TestEdges(t *testing.T) {
	row := func(peer, state string) LinkJSON { return LinkJSON{Peer: peer, State: state} }
	region := func(name string, links ...LinkJSON) RegionView {
		return RegionView{Name: name, Reachable: true, Status: &Status{Region: name, Links: links}}
	}
	gone := func(name string) RegionView { return RegionView{Name: name, Error: "unreachable"} }
	for _, tc := range []struct {
		name    string
		regions []RegionView
		want    map[string]string
	}{
		{"all up", []RegionView{
			region("us", row("ap", "up"), row("eu", "up")),
			region("ap", row("eu", "up"), row("us", "up")),
			region("eu", row("ap", "up"), row("us", "up")),
		}, map[string]string{"ap:eu": "up", "ap:us": "up", "eu:us": "up"}},
		{"one end cut wins", []RegionView{
			region("ap", row("eu", "cut")),
			region("eu", row("ap", "down")),
		}, map[string]string{"ap:eu": "cut"}},
		{"one end down", []RegionView{
			region("ap", row("eu", "up")),
			region("eu", row("ap", "down")),
		}, map[string]string{"ap:eu": "down"}},
		{"unreachable end: the other's row", []RegionView{
			region("ap", row("eu", "down"), row("us", "up")),
			gone("eu"),
			region("us", row("ap", "up"), row("eu", "up")),
		}, map[string]string{"ap:eu": "down", "ap:us": "up", "eu:us": "up"}},
		{"both ends unreachable", []RegionView{
			region("ap", row("eu", "up")),
			gone("eu"),
			gone("us"),
		}, map[string]string{"ap:eu": "up", "ap:us": "unknown", "eu:us": "unknown"}},
		{"alone", []RegionView{region("local")}, map[string]string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := make(map[string]string)
			for _, e := range edges(tc.regions) {
				if e.A >= e.B || e.ID != e.A+":"+e.B {
					t.Errorf("edge %+v: ends out of order or id wrong", e)
				}
				got[e.ID] = e.State
			}
			if len(got) != len(tc.want) {
				t.Errorf("edges %v, want %v", got, tc.want)
			}
			for id, want := range tc.want {
				if got[id] != want {
					t.Errorf("%s: %q, want %q", id, got[id], want)
				}
			}
		})
	}
}

func TestSendResult(t *testing.T) {
	for _, tc := range []struct {
		name string
		resp any
		err  error
		want string
	}{
		{"committed", &clientv1.SendMessageResponse{State: clientv1.DeliveryState_DELIVERY_STATE_COMMITTED}, nil, "committed"},
		{"duplicate", &clientv1.SendMessageResponse{State: clientv1.DeliveryState_DELIVERY_STATE_COMMITTED, Duplicate: true}, nil, "duplicate"},
		{"accepted", &clientv1.SendMessageResponse{State: clientv1.DeliveryState_DELIVERY_STATE_ACCEPTED}, nil, "accepted"},
		{"refused", nil, status.Error(codes.ResourceExhausted, "send_rate"), "refused"},
		{"rejected", nil, status.Error(codes.PermissionDenied, "not a member"), "rejected"},
		{"unauthenticated", nil, status.Error(codes.Unauthenticated, "login"), "rejected"},
		{"failed", nil, status.Error(codes.Unavailable, "home unreachable"), "failed"},
		{"plain error", nil, errors.New("boom"), "failed"},
	} {
		if got := sendResults[sendResult(tc.resp, tc.err)]; got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}
