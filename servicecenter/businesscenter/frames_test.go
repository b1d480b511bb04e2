package businesscenter

import (
	"strings"
	"testing"

	"google.golang.org/grpc/encoding"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
)

// TestFrames checks the hand-built delivery frames against what protobuf
// makes of the same SessionResponse, through ServerCodec as gRPC calls it.
func TestFrames(t *testing.T) {
	msg := func(seq uint64, body string) *encodedMessage {
		em, err := encodeMessage(&clientv1.Message{
			GroupId: "g_1", MessageId: "m_1", SenderId: "u_1", SenderName: "alice", ClientMsgId: "c",
			Seq: seq, Body: body, SentAt: timestamppb.Now(), CommittedAt: timestamppb.Now(), OriginRegion: "ap",
		})
		if err != nil {
			t.Fatal(err)
		}
		return em
	}
	big := msg(7, strings.Repeat("é", 40_000))
	one := msg(1, "hi")
	codec := frameCodec{proto: encoding.GetCodecV2("proto")}
	for _, tc := range []struct {
		name string
		ds   []queuedDelivery
		want *clientv1.SessionResponse
	}{
		{
			name: "one delivery",
			ds:   []queuedDelivery{{id: 1, attempt: 1, m: one}},
			want: &clientv1.SessionResponse{Kind: &clientv1.SessionResponse_Delivery{Delivery: &clientv1.Delivery{DeliveryId: 1, Attempt: 1, Message: one.msg}}},
		},
		{
			name: "large ids, a resend, a large body",
			ds:   []queuedDelivery{{id: 1 << 40, attempt: 300, m: big}},
			want: &clientv1.SessionResponse{Kind: &clientv1.SessionResponse_Delivery{Delivery: &clientv1.Delivery{DeliveryId: 1 << 40, Attempt: 300, Message: big.msg}}},
		},
		{
			name: "several",
			ds:   []queuedDelivery{{id: 5, attempt: 1, m: one}, {id: 6, attempt: 2, m: big}, {id: 1000, attempt: 1, m: one}},
			want: &clientv1.SessionResponse{Kind: &clientv1.SessionResponse_Deliveries{Deliveries: &clientv1.Deliveries{Deliveries: []*clientv1.Delivery{
				{DeliveryId: 5, Attempt: 1, Message: one.msg},
				{DeliveryId: 6, Attempt: 2, Message: big.msg},
				{DeliveryId: 1000, Attempt: 1, Message: one.msg},
			}}}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := new(encodedFrame)
			f.set(tc.ds)
			wantFirst, wantResends := 0, 0
			for _, d := range tc.ds {
				if d.attempt > 1 {
					wantResends++
				} else {
					wantFirst++
				}
			}
			if first, resends := f.DeliveryCounts(); first != wantFirst || resends != wantResends {
				t.Errorf("DeliveryCounts = %d, %d; want %d, %d", first, resends, wantFirst, wantResends)
			}
			data, err := codec.Marshal(f)
			if err != nil {
				t.Fatal(err)
			}
			b := data.Materialize()
			data.Free()
			if want, _ := proto.Marshal(tc.want); len(b) != len(want) {
				t.Errorf("frame is %d bytes, protobuf makes %d", len(b), len(want))
			}
			got := new(clientv1.SessionResponse)
			if err := proto.Unmarshal(b, got); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, tc.want) {
				t.Errorf("frame decodes to %v\nwant %v", got, tc.want)
			}
			if _, err := codec.Marshal(f); err == nil {
				t.Error("a frame marshaled twice: no error")
			}
		})
	}
	// Anything else goes through protobuf.
	pong := &clientv1.SessionResponse{Kind: &clientv1.SessionResponse_Pong{Pong: &clientv1.Pong{Nonce: 9}}}
	data, err := codec.Marshal(pong)
	if err != nil {
		t.Fatal(err)
	}
	got := new(clientv1.SessionResponse)
	if err := codec.Unmarshal(data, got); err != nil || !proto.Equal(got, pong) {
		t.Errorf("pong through the codec = %v, %v", got, err)
	}
}
