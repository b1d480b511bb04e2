package businesscenter

import (
	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	recordv1 "github.com/roamfed/roamfed/api/record/v1"
)

func groupToClient(g *recordv1.Group) *clientv1.Group {
	members := make([]*clientv1.Member, len(g.GetMembers()))
	for i, m := range g.GetMembers() {
		members[i] = &clientv1.Member{
			UserId:     m.GetUserId(),
			Username:   m.GetName(),
			HomeRegion: m.GetHomeRegion(),
			JoinedAt:   m.GetJoinedAt(),
		}
	}
	settings := make(map[string]string, len(g.GetSettings()))
	for k, v := range g.GetSettings() {
		settings[k] = v
	}
	return &clientv1.Group{
		Id:         g.GetId(),
		Name:       g.GetName(),
		Notice:     g.GetNotice(),
		Settings:   settings,
		Members:    members,
		HomeRegion: g.GetHomeRegion(),
		Version:    g.GetVersion(),
		CreatedAt:  g.GetCreatedAt(),
		UpdatedAt:  g.GetUpdatedAt(),
		OwnerId:    g.GetOwnerId(),
	}
}

func messageToClient(m *recordv1.Message) *clientv1.Message {
	return &clientv1.Message{
		GroupId:      m.GetGroupId(),
		Seq:          m.GetSeq(),
		MessageId:    m.GetMessageId(),
		SenderId:     m.GetSenderId(),
		SenderName:   m.GetSenderName(),
		ClientMsgId:  m.GetClientMsgId(),
		Body:         m.GetBody(),
		SentAt:       m.GetSentAt(),
		CommittedAt:  m.GetCommittedAt(),
		OriginRegion: m.GetOriginRegion(),
	}
}
