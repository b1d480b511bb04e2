package checker

import (
	"context"
	"fmt"
	"slices"
	"time"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
	"github.com/roamfed/roamfed/internal/clientkit"
)

// Client is one member's way to its region, for Verify.
type Client struct {
	User   string // user id
	Region string // the region API talks to, for reports
	API    clientv1.ClientServiceClient
	Token  string
}

// VerifyResult is what Verify found.
type VerifyResult struct {
	// Histories is how many (member, group) histories were read, Messages
	// how many messages they held in all.
	Histories int       `json:"histories"`
	Messages  int       `json:"messages"`
	Problems  []Problem `json:"problems,omitempty"`
	// Unlisted counts problems beyond the first ones listed.
	Unlisted int `json:"unlisted_problems,omitempty"`
	// Count of problems by kind, listed or not.
	Counts map[Kind]int `json:"counts,omitempty"`
}

// OK reports whether every history read was complete and right.
func (v VerifyResult) OK() bool { return len(v.Problems) == 0 }

// expectation is what the run was told of one acknowledged message.
type expectation struct {
	seq       uint64 // 0 when the run never learned it
	messageID string // "" likewise
}

// Verify reads, for every client, the full history of every declared
// group the client's user is a member of, from that client's region, and
// checks it: seqs 1 to the log's last with no gap, each once and in order;
// every acknowledged message present exactly once, at the seq and with the
// message id the run saw; and every seq holding the same message as in
// the other members' histories. What the histories show is recorded too,
// so a later Report counts conflicts between regions as duplicates.
//
// Each history read is bounded by perCall (0: 30s); a read that fails is
// reported as a problem of kind unreadable. Verify returns early only when
// ctx ends.
func (r *Recorder) Verify(ctx context.Context, clients []Client, perCall time.Duration) VerifyResult {
	if perCall <= 0 {
		perCall = 30 * time.Second
	}
	var res VerifyResult
	var problems []Problem
	for _, c := range clients {
		for _, gid := range r.memberOf(c.User) {
			if ctx.Err() != nil {
				break
			}
			var log []*clientv1.Message
			cctx, cancel := context.WithTimeout(clientkit.WithToken(ctx, c.Token), perCall)
			end, err := clientkit.ReadHistory(cctx, c.API, gid, 0, func(m *clientv1.Message) { log = append(log, m) })
			cancel()
			if err != nil {
				problems = append(problems, Problem{Kind: KindUnreadable, Group: gid, Member: c.User,
					Detail: fmt.Sprintf("history from %s: %v", c.Region, err)})
				continue
			}
			res.Histories++
			res.Messages += len(log)
			expect := r.expectations(gid)
			ps := checkLog(log, end.LogLast, expect)
			for i := range ps {
				ps[i].Group, ps[i].Member = gid, c.User
				ps[i].Detail += " (history from " + c.Region + ")"
			}
			problems = append(problems, ps...)
			r.mu.Lock()
			g := r.groups[gid]
			for _, m := range log {
				if id, ok := g.bySeq[m.GetSeq()]; ok && id != m.GetMessageId() {
					problems = append(problems, Problem{Kind: KindMismatch, Group: gid, Member: c.User, Seq: m.GetSeq(),
						Detail: fmt.Sprintf("seq %d holds message %s; elsewhere it holds %s (history from %s)", m.GetSeq(), m.GetMessageId(), id, c.Region)})
				}
				r.observe(gid, m.GetSeq(), m.GetMessageId(), m.GetClientMsgId(), "history of "+c.User+" from "+c.Region)
			}
			r.mu.Unlock()
		}
	}
	sortProblems(problems)
	res.Counts = make(map[Kind]int)
	for _, p := range problems {
		res.Counts[p.Kind]++
	}
	if len(problems) > maxListed {
		res.Unlisted = len(problems) - maxListed
		problems = problems[:maxListed]
	}
	res.Problems = problems
	return res
}

// memberOf returns the declared groups user is a member of, sorted.
func (r *Recorder) memberOf(user string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for id, g := range r.groups {
		if _, ok := g.holds[user]; ok {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// expectations returns group's acknowledged messages by client_msg_id.
func (r *Recorder) expectations(group string) map[string]expectation {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]expectation)
	for k, m := range r.msgs {
		if k.group == group && m.acked {
			out[k.clientMsgID] = expectation{seq: m.seq, messageID: m.messageID}
		}
	}
	return out
}

// checkLog checks one history, read in full, against the log's last seq
// as the region reported it and the acknowledged messages. The problems it
// returns name neither group nor member.
func checkLog(log []*clientv1.Message, logLast uint64, acked map[string]expectation) []Problem {
	var ps []Problem
	add := func(k Kind, seq uint64, format string, args ...any) {
		ps = append(ps, Problem{Kind: k, Seq: seq, Detail: fmt.Sprintf(format, args...)})
	}
	var prev uint64
	seenSeq := make(map[uint64]string)
	seenID := make(map[string]uint64)
	seenClient := make(map[string][]uint64)
	for _, m := range log {
		seq, id, cmid := m.GetSeq(), m.GetMessageId(), m.GetClientMsgId()
		switch {
		case seq == prev+1:
		case seq > prev+1:
			add(KindGap, prev+1, "seqs %s are missing", seqRange(prev+1, seq-1))
		default:
			add(KindOutOfOrder, seq, "seq %d comes after seq %d", seq, prev)
		}
		prev = max(prev, seq)
		if other, ok := seenSeq[seq]; ok {
			add(KindDuplicate, seq, "seq %d appears twice (messages %s and %s)", seq, other, id)
		} else {
			seenSeq[seq] = id
		}
		if other, ok := seenID[id]; ok && other != seq {
			add(KindDuplicate, seq, "message %s is at seq %d and seq %d", id, other, seq)
		} else {
			seenID[id] = seq
		}
		seenClient[cmid] = append(seenClient[cmid], seq)
	}
	if logLast > prev {
		add(KindGap, prev+1, "the log's last seq is %d but the history ends at %d", logLast, prev)
	}
	cmids := make([]string, 0, len(acked))
	for cmid := range acked {
		cmids = append(cmids, cmid)
	}
	slices.Sort(cmids)
	for _, cmid := range cmids {
		e := acked[cmid]
		seqs := seenClient[cmid]
		switch {
		case len(seqs) == 0:
			add(KindMissing, e.seq, "acknowledged message %s is not in the history", cmid)
			continue
		case len(seqs) > 1:
			add(KindDuplicate, seqs[1], "message %s is stored %d times, at seqs %v", cmid, len(seqs), seqs)
		}
		if e.seq != 0 && seqs[0] != e.seq {
			add(KindMismatch, seqs[0], "message %s is at seq %d; the run saw it at seq %d", cmid, seqs[0], e.seq)
		}
		if got := seenSeq[seqs[0]]; e.messageID != "" && got != e.messageID {
			add(KindMismatch, seqs[0], "message %s has id %s; the run saw id %s", cmid, got, e.messageID)
		}
	}
	return ps
}
