package businesscenter

import (
	"context"
	"errors"
	"log/slog"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	recordv1 "github.com/roamfed/roamfed/api/record/v1"
	"github.com/roamfed/roamfed/internal/ids"
	"github.com/roamfed/roamfed/internal/validate"
)

// History page sizes.
const (
	defaultHistoryLimit = 100
	maxHistoryLimit     = 1000
)

// SendMessage commits a message to a group homed here and returns its
// sequence number once it is synced.
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
	_, m, err := s.memberGroup(req.GetGroupId(), c.userID)
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
	now := timestamppb.New(s.cfg.Now())
	res, err := s.store.Append(ctx, &recordv1.Message{
		GroupId:      req.GetGroupId(),
		MessageId:    msgID,
		SenderId:     c.userID,
		SenderName:   m.GetName(),
		ClientMsgId:  clientMsgID,
		Body:         req.GetBody(),
		SentAt:       now,
		CommittedAt:  now,
		OriginRegion: s.cfg.Region,
	})
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

// GetHistory returns a group's messages after a sequence number.
func (s *Server) GetHistory(ctx context.Context, req *clientv1.GetHistoryRequest) (*clientv1.GetHistoryResponse, error) {
	c, err := s.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	if err := validate.ID("group_id", ids.Group, req.GetGroupId()); err != nil {
		return nil, err
	}
	if _, _, err := s.memberGroup(req.GetGroupId(), c.userID); err != nil {
		return nil, err
	}
	limit := int(req.GetLimit())
	switch {
	case limit == 0:
		limit = defaultHistoryLimit
	case limit > maxHistoryLimit:
		limit = maxHistoryLimit
	}
	// Read the last sequence number first: the page then never ends past
	// it, and has_more covers anything committed in between.
	last, err := s.store.LastSeq(req.GetGroupId())
	if err != nil {
		return nil, err
	}
	msgs, more, err := s.store.History(req.GetGroupId(), req.GetAfterSeq(), limit)
	if err != nil {
		return nil, err
	}
	resp := &clientv1.GetHistoryResponse{LastSeq: last, HasMore: more}
	for _, m := range msgs {
		resp.Messages = append(resp.Messages, messageToClient(m))
	}
	return resp, nil
}

// publishCommitted is the data center's commit hook: it publishes each
// newly committed message on the bus for the region's nodes, in commit
// order.
func (s *Server) publishCommitted(msgs []*recordv1.Message) {
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
		s.publish(s.fanoutSubject, f)
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

// onFanout hands a committed message to the sessions of its recipients on
// this node. The bus calls it from one goroutine, in publish order.
func (s *Server) onFanout(msg *nats.Msg) {
	f := new(recordv1.Fanout)
	if err := proto.Unmarshal(msg.Data, f); err != nil {
		s.log.Warn("fanout: undecodable bus message", slog.Any("err", err))
		return
	}
	var cm *clientv1.Message
	for _, uid := range f.GetRecipients() {
		for _, ss := range s.hub.sessionsOf(uid) {
			if cm == nil {
				cm = messageToClient(f.GetMessage())
			}
			ss.deliver(cm)
		}
	}
}
