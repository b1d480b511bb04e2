package businesscenter

import (
	"context"
	"errors"
	"log/slog"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	recordv1 "github.com/roamfed/roamfed/api/record/v1"
	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
	"github.com/roamfed/roamfed/internal/ids"
	"github.com/roamfed/roamfed/internal/validate"
	"github.com/roamfed/roamfed/servicecenter/datacenter"
)

// History page sizes.
const (
	defaultHistoryLimit = 100
	maxHistoryLimit     = 1000
)

// SendMessage has the group's home commit a message and returns its
// sequence number once it is synced there.
func (s *Server) SendMessage(ctx context.Context, req *clientv1.SendMessageRequest) (*clientv1.SendMessageResponse, error) {
	c, err := s.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	if err := errors.Join(
		validate.ID("group_id", ids.Group, req.GetGroupId()),
		validate.ClientMsgID("client_msg_id", req.GetClientMsgId()),
		validate.Body("body", req.GetBody()),
	); err != nil {
		return nil, err
	}
	if err := s.pool.CheckMessageSize("user:"+c.userID, len(req.GetBody())); err != nil {
		return nil, err
	}
	home, err := s.groupHome(ctx, req.GetGroupId())
	if err != nil {
		return nil, err
	}
	if err := s.pool.AllowSend(c.userID); err != nil {
		return nil, err
	}
	msgID := ids.New(ids.Message)
	clientMsgID := req.GetClientMsgId()
	if clientMsgID == "" {
		clientMsgID = msgID
	}
	m := &recordv1.Message{
		GroupId:      req.GetGroupId(),
		MessageId:    msgID,
		SenderId:     c.userID,
		SenderName:   c.username,
		ClientMsgId:  clientMsgID,
		Body:         req.GetBody(),
		SentAt:       timestamppb.New(s.cfg.Now()),
		OriginRegion: s.cfg.Region,
	}
	var res datacenter.Appended
	if home == s.cfg.Region {
		res, err = s.home.Commit(ctx, m)
	} else {
		res, err = s.roaming.Submit(ctx, home, m)
	}
	if errors.Is(err, ErrAccepted) {
		return &clientv1.SendMessageResponse{
			MessageId: m.GetMessageId(),
			State:     clientv1.DeliveryState_DELIVERY_STATE_ACCEPTED,
		}, nil
	}
	if err != nil {
		return nil, err
	}
	return &clientv1.SendMessageResponse{
		MessageId:   res.Message.GetMessageId(),
		Seq:         res.Message.GetSeq(),
		State:       clientv1.DeliveryState_DELIVERY_STATE_COMMITTED,
		CommittedAt: res.Message.GetCommittedAt(),
		Duplicate:   res.Duplicate,
	}, nil
}

// GetHistory returns a group's messages after a sequence number, from the
// group's home.
func (s *Server) GetHistory(ctx context.Context, req *clientv1.GetHistoryRequest) (*clientv1.GetHistoryResponse, error) {
	c, err := s.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	if err := validate.ID("group_id", ids.Group, req.GetGroupId()); err != nil {
		return nil, err
	}
	home, err := s.groupHome(ctx, req.GetGroupId())
	if err != nil {
		return nil, err
	}
	fetch := &roamingv1.FetchHistoryRequest{
		GroupId:  req.GetGroupId(),
		UserId:   c.userID,
		AfterSeq: req.GetAfterSeq(),
		Limit:    min(req.GetLimit(), maxHistoryLimit),
	}
	var page *roamingv1.FetchHistoryResponse
	if home == s.cfg.Region {
		page, err = s.home.History(fetch)
	} else {
		page, err = s.roaming.FetchHistory(ctx, home, fetch)
	}
	if err != nil {
		return nil, err
	}
	resp := &clientv1.GetHistoryResponse{LastSeq: page.GetLastSeq(), HasMore: page.GetHasMore()}
	for _, m := range page.GetMessages() {
		resp.Messages = append(resp.Messages, messageToClient(m))
	}
	return resp, nil
}

// publishCommitted is the data center's commit hook: it publishes each
// newly committed message on the bus for this region's nodes and hands it
// to the roaming system for the other regions, in commit order.
func (s *Server) publishCommitted(msgs []*recordv1.Message) {
	items := make([]*recordv1.Fanout, 0, len(msgs))
	for _, m := range msgs {
		g, err := s.store.Group(m.GetGroupId())
		if err != nil {
			s.log.Warn("fanout: group unreadable; members will catch up from history",
				slog.String("group", m.GetGroupId()), slog.Any("err", err))
			continue
		}
		f := &recordv1.Fanout{Message: m, Recipients: make([]string, len(g.GetMembers()))}
		for i, mem := range g.GetMembers() {
			f.Recipients[i] = mem.GetUserId()
		}
		items = append(items, f)
		if s.roaming != nil {
			s.roaming.Committed(g, m)
		}
	}
	s.publishFanouts(items)
}

// Deliver hands messages committed at another region to the sessions of
// their recipients in this region. The roaming system calls it, in the
// order the home committed them.
func (s *Server) Deliver(items []*recordv1.Fanout) {
	s.publishFanouts(items)
}

// publishFanouts puts items on the bus, in order, in as few bus messages
// as the bus's payload limit allows: one bus message, and one wakeup of
// every node's subscriber, per batch rather than per message.
func (s *Server) publishFanouts(items []*recordv1.Fanout) {
	for _, part := range splitFanouts(items, int(s.bus.MaxPayload())-fanoutsHeadroom) {
		s.publish(s.fanoutSubject, &recordv1.Fanouts{Items: part})
	}
}

// fanoutsHeadroom is room under the bus's payload limit for what a bus
// message carries besides the payload.
const fanoutsHeadroom = 1 << 10

// splitFanouts cuts items, in order, into runs whose Fanouts encoding is at
// most limit bytes. An item too large for any run goes alone (the bus then
// refuses it, and the refusal is logged).
func splitFanouts(items []*recordv1.Fanout, limit int) [][]*recordv1.Fanout {
	var (
		parts [][]*recordv1.Fanout
		start int
		size  int
	)
	for i, f := range items {
		n := protowire.SizeTag(1) + protowire.SizeBytes(proto.Size(f))
		if i > start && size+n > limit {
			parts = append(parts, items[start:i])
			start, size = i, 0
		}
		size += n
	}
	if start < len(items) {
		parts = append(parts, items[start:])
	}
	return parts
}

// Receipt tells a sender's sessions what became of a message that was
// accepted but not committed when sent. The roaming system calls it.
func (s *Server) Receipt(r *recordv1.Receipt) {
	s.publish(s.receiptSubject, r)
}

// onReceipt hands a receipt to the sender's sessions on this node.
func (s *Server) onReceipt(msg *nats.Msg) {
	r := new(recordv1.Receipt)
	if err := proto.Unmarshal(msg.Data, r); err != nil {
		s.log.Warn("receipt: undecodable bus message", slog.Any("err", err))
		return
	}
	cr := &clientv1.Receipt{
		GroupId: r.GetGroupId(), MessageId: r.GetMessageId(), ClientMsgId: r.GetClientMsgId(),
		Seq: r.GetSeq(), CommittedAt: r.GetCommittedAt(), Error: r.GetError(),
	}
	if r.GetCode() == 0 {
		cr.State = clientv1.DeliveryState_DELIVERY_STATE_COMMITTED
	}
	resp := &clientv1.SessionResponse{Kind: &clientv1.SessionResponse_Receipt{Receipt: cr}}
	for _, ss := range s.hub.sessionsOf(r.GetUserId()) {
		if !ss.control(resp) {
			s.log.Warn("receipt dropped: session queue full", slog.String("user", r.GetUserId()), slog.String("message", r.GetMessageId()))
		}
	}
}

func (s *Server) publish(subject string, m proto.Message) {
	b, err := proto.Marshal(m)
	if err == nil {
		err = s.bus.Publish(subject, b)
	}
	if err != nil {
		s.log.Warn("bus publish failed", slog.String("subject", subject), slog.Any("err", err))
	}
}

// onFanout hands committed messages to the sessions of their recipients on
// this node. The bus calls it from one goroutine, in publish order.
func (s *Server) onFanout(msg *nats.Msg) {
	batch := new(recordv1.Fanouts)
	if err := proto.Unmarshal(msg.Data, batch); err != nil {
		s.log.Warn("fanout: undecodable bus message", slog.Any("err", err))
		return
	}
	for _, f := range batch.GetItems() {
		s.fanout(f)
	}
}

// fanout hands one committed message to the sessions of its recipients on
// this node.
func (s *Server) fanout(f *recordv1.Fanout) {
	var (
		em  *encodedMessage
		err error
	)
	for _, uid := range f.GetRecipients() {
		for _, ss := range s.hub.sessionsOf(uid) {
			if em == nil {
				if em, err = encodeMessage(messageToClient(f.GetMessage())); err != nil {
					s.log.Warn("fanout: unencodable message; members will catch up from history",
						slog.String("group", f.GetMessage().GetGroupId()), slog.Any("err", err))
					return
				}
			}
			ss.deliver(em)
		}
	}
}
