package businesscenter

import (
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
)

// A message goes to every recipient's Session in the same encoding, so it
// is encoded once, when it reaches this node, and each delivery frame is a
// few bytes of header around that encoding: on the wire an embedded message
// is its own encoding, length-prefixed. The frames go out through
// ServerCodec, which sends them as they are.

// encodedMessage is a message with its protobuf encoding.
type encodedMessage struct {
	msg *clientv1.Message
	b   []byte
}

func encodeMessage(m *clientv1.Message) (*encodedMessage, error) {
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, err
	}
	return &encodedMessage{msg: m, b: b}, nil
}

// Field numbers of the frames built here, from api/client/v1/client.proto.
const (
	fieldResponseDelivery   protowire.Number = 2 // SessionResponse.delivery
	fieldResponseDeliveries protowire.Number = 7 // SessionResponse.deliveries
	fieldDeliveriesItem     protowire.Number = 1 // Deliveries.deliveries
	fieldDeliveryID         protowire.Number = 1 // Delivery.delivery_id
	fieldDeliveryMessage    protowire.Number = 2 // Delivery.message
	fieldDeliveryAttempt    protowire.Number = 3 // Delivery.attempt
)

// queuedDelivery is one attempt of a delivery, as queued for the writer.
type queuedDelivery struct {
	id      uint64
	attempt uint32
	m       *encodedMessage
}

// size is the length of the encoded Delivery.
func (d queuedDelivery) size() int {
	return protowire.SizeTag(fieldDeliveryID) + protowire.SizeVarint(d.id) +
		protowire.SizeTag(fieldDeliveryMessage) + protowire.SizeBytes(len(d.m.b)) +
		protowire.SizeTag(fieldDeliveryAttempt) + protowire.SizeVarint(uint64(d.attempt))
}

func (d queuedDelivery) appendTo(b []byte) []byte {
	b = protowire.AppendTag(b, fieldDeliveryID, protowire.VarintType)
	b = protowire.AppendVarint(b, d.id)
	b = protowire.AppendTag(b, fieldDeliveryMessage, protowire.BytesType)
	b = protowire.AppendBytes(b, d.m.b)
	b = protowire.AppendTag(b, fieldDeliveryAttempt, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(d.attempt))
}

// batchedSize is what d adds to a Deliveries frame: itself, its tag and
// its length.
func (d queuedDelivery) batchedSize() int {
	return protowire.SizeTag(fieldDeliveriesItem) + protowire.SizeBytes(d.size())
}

// encodedFrame is a SessionResponse in its wire form: a Delivery frame for
// one delivery, a Deliveries frame for more. A session's writer reuses one:
// SendMsg is done with it when it returns, and the bytes go to gRPC.
type encodedFrame struct {
	buf            mem.Buffer
	first, resends int
}

// framePool holds large frames' buffers; gRPC returns each to it once the
// frame is written. Small frames are allocated, as gRPC's own codec does.
var framePool = mem.DefaultBufferPool()

// set encodes ds, at least one delivery, as the frame.
func (f *encodedFrame) set(ds []queuedDelivery) {
	f.first, f.resends = 0, 0
	for _, d := range ds {
		if d.attempt > 1 {
			f.resends++
		} else {
			f.first++
		}
	}
	field, size := fieldResponseDelivery, ds[0].size()
	if len(ds) > 1 {
		field, size = fieldResponseDeliveries, 0
		for _, d := range ds {
			size += d.batchedSize()
		}
	}
	n := protowire.SizeTag(field) + protowire.SizeBytes(size)
	var b []byte
	var pooled *[]byte
	if mem.IsBelowBufferPoolingThreshold(n) {
		b = make([]byte, 0, n)
	} else {
		pooled = framePool.Get(n)
		b = (*pooled)[:0]
	}
	b = protowire.AppendTag(b, field, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(size))
	if len(ds) == 1 {
		b = ds[0].appendTo(b)
	} else {
		for _, d := range ds {
			b = protowire.AppendTag(b, fieldDeliveriesItem, protowire.BytesType)
			b = protowire.AppendVarint(b, uint64(d.size()))
			b = d.appendTo(b)
		}
	}
	if pooled == nil {
		f.buf = mem.SliceBuffer(b)
		return
	}
	*pooled = b
	f.buf = mem.NewBuffer(pooled, framePool)
}

// DeliveryCounts says how many first deliveries and resends the frame
// holds, for the metrics interceptor.
func (f *encodedFrame) DeliveryCounts() (first, resends int) { return f.first, f.resends }

// ServerCodec is the codec of the gRPC server the client service is
// registered on (grpc.ForceServerCodecV2): protobuf, except that delivery
// frames, already encoded, are sent as they are. Session fails on a server
// without it.
func ServerCodec() grpc.ServerOption {
	return grpc.ForceServerCodecV2(frameCodec{proto: encoding.GetCodecV2("proto")})
}

type frameCodec struct{ proto encoding.CodecV2 }

func (c frameCodec) Marshal(v any) (mem.BufferSlice, error) {
	f, ok := v.(*encodedFrame)
	if !ok {
		return c.proto.Marshal(v)
	}
	if f.buf == nil {
		return nil, fmt.Errorf("businesscenter: frame sent twice")
	}
	buf := f.buf
	f.buf = nil
	return mem.BufferSlice{buf}, nil
}

func (c frameCodec) Unmarshal(data mem.BufferSlice, v any) error { return c.proto.Unmarshal(data, v) }

func (frameCodec) Name() string { return "proto" }
