package checker

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/roamfed/roamfed/internal/clientkit"
)

// Kind names a problem.
type Kind string

// Problem kinds. Lost, duplicate, out-of-order and gap come from a
// Report; Verify adds the others.
const (
	KindLost       Kind = "lost"         // acknowledged, never got by a member
	KindDuplicate  Kind = "duplicate"    // one message at two seqs, or two messages at one seq
	KindOutOfOrder Kind = "out_of_order" // handed over after a higher seq
	KindGap        Kind = "gap"          // seqs missing below the highest held
	KindMissing    Kind = "missing"      // acknowledged, not in a member's history
	KindMismatch   Kind = "mismatch"     // history disagrees with what the run was told
	KindUnreadable Kind = "unreadable"   // the history could not be read
)

// maxListed bounds the problems a report lists; the counts are complete.
const maxListed = 50

// Problem is one thing a check found wrong.
type Problem struct {
	Kind   Kind   `json:"kind"`
	Group  string `json:"group"`
	Member string `json:"member,omitempty"`
	Seq    uint64 `json:"seq,omitempty"`
	Detail string `json:"detail"`
}

func (p Problem) String() string {
	s := string(p.Kind) + ": group " + p.Group
	if p.Member != "" {
		s += " member " + p.Member
	}
	return s + ": " + p.Detail
}

// Counts are one group's numbers, or the run's.
type Counts struct {
	// Messages is the number of distinct messages (client_msg_ids) sent;
	// Attempts counts their retries too, SendErrors the attempts that got
	// an error, and Unacknowledged the messages none of whose attempts
	// got an answer.
	Messages       int `json:"messages"`
	Attempts       int `json:"attempts"`
	SendErrors     int `json:"send_errors"`
	Unacknowledged int `json:"unacknowledged"`
	// Committed and Accepted split the acknowledged messages by their
	// first answer; AcceptedCommitted is how many accepted ones were seen
	// committed later (receipt, delivery or history).
	Committed         int `json:"committed"`
	Accepted          int `json:"accepted"`
	AcceptedCommitted int `json:"accepted_committed"`
	Receipts          int `json:"receipts"`
	ReceiptErrors     int `json:"receipt_errors"`
	// Expected is acknowledged messages times members; Delivered is how
	// many of those deliveries the applications got, Live and CaughtUp
	// split every message the applications got by how it came.
	Expected  int `json:"expected_deliveries"`
	Delivered int `json:"delivered"`
	Live      int `json:"live"`
	CaughtUp  int `json:"caught_up"`

	// Must be zero. Lost counts (member, message) pairs, LostMessages the
	// messages that some member lacks; Duplicates distinct conflicts.
	Lost         int `json:"lost"`
	LostMessages int `json:"lost_messages"`
	Duplicates   int `json:"duplicates"`
	OutOfOrder   int `json:"out_of_order"`
	Gaps         int `json:"gaps"`

	// For information: seqs the clients gave up waiting for, arrivals of a
	// seq already arrived (resends, catch-up overlapping live delivery),
	// live arrivals below a seq already arrived live, handovers of a seq
	// already handed over, and messages no recorded send explains.
	Skipped       int `json:"skipped"`
	RawDuplicates int `json:"raw_duplicates"`
	RawReordered  int `json:"raw_reordered"`
	Redelivered   int `json:"redelivered"`
	Foreign       int `json:"foreign,omitempty"`

	// Delivery lag: from a message's first send attempt until a member's
	// application got it.
	LagP50 time.Duration `json:"-"`
	LagP99 time.Duration `json:"-"`
	LagMax time.Duration `json:"-"`
}

// OK reports whether the counts meet the guarantees.
func (c Counts) OK() bool {
	return c.Lost == 0 && c.Duplicates == 0 && c.OutOfOrder == 0 && c.Gaps == 0
}

// GroupReport is one group's part of a Report.
type GroupReport struct {
	Group   string `json:"group"`
	Home    string `json:"home"`
	Members int    `json:"members"`
	LastSeq uint64 `json:"last_seq"`
	Counts
}

// Report is the checker's verdict on a run.
type Report struct {
	Totals Counts        `json:"totals"`
	Groups []GroupReport `json:"groups"`
	// Problems lists the first problems found, by kind, group, member and
	// seq; Unlisted counts the rest.
	Problems []Problem `json:"problems,omitempty"`
	Unlisted int       `json:"unlisted_problems,omitempty"`
}

// OK reports whether the run met the guarantees.
func (r Report) OK() bool { return r.Totals.OK() }

// Report computes the verdict on what was recorded so far. It may be
// called more than once; take the final one after the run has settled.
func (r *Recorder) Report() Report {
	r.mu.Lock()
	defer r.mu.Unlock()
	var rep Report
	var problems []Problem
	var allLags []time.Duration
	gids := make([]string, 0, len(r.groups))
	for id := range r.groups {
		gids = append(gids, id)
	}
	slices.Sort(gids)
	// Messages by group, in client_msg_id order, for stable output.
	byGroup := make(map[string][]*message)
	for _, m := range r.msgs {
		byGroup[m.key.group] = append(byGroup[m.key.group], m)
	}
	for _, id := range gids {
		g := r.groups[id]
		msgs := byGroup[id]
		slices.SortFunc(msgs, func(a, b *message) int {
			return cmp.Or(cmp.Compare(a.seq, b.seq), cmp.Compare(a.key.clientMsgID, b.key.clientMsgID))
		})
		members := slices.Clone(g.members)
		slices.Sort(members)
		gr := GroupReport{Group: id, Home: g.home, Members: len(members), LastSeq: g.maxSeq}
		c := &gr.Counts
		var lags []time.Duration
		for _, m := range msgs {
			if m.attempts == 0 {
				continue // a receipt for a message not sent in this run
			}
			c.Messages++
			c.Attempts += m.attempts
			c.SendErrors += m.failures
			c.Receipts += m.receipts
			if m.receiptErr != "" {
				c.ReceiptErrors++
			}
			if !m.acked {
				c.Unacknowledged++
				continue
			}
			if m.accepted {
				c.Accepted++
				if m.committedLater {
					c.AcceptedCommitted++
				}
			} else {
				c.Committed++
			}
			c.Expected += len(members)
			lost := false
			for _, member := range members {
				h := g.holds[member]
				seq, ok := h.byClient[m.key.clientMsgID]
				if !ok {
					c.Lost++
					lost = true
					problems = append(problems, Problem{Kind: KindLost, Group: id, Member: member, Seq: m.seq,
						Detail: lostDetail(m)})
					continue
				}
				c.Delivered++
				if at := h.held[seq].at; !m.firstSent.IsZero() && at.After(m.firstSent) {
					lags = append(lags, at.Sub(m.firstSent))
				}
			}
			if lost {
				c.LostMessages++
			}
		}
		for _, member := range members {
			h := g.holds[member]
			c.OutOfOrder += h.outOfOrder
			c.Redelivered += h.redelivered
			c.RawDuplicates += h.rawDup
			c.RawReordered += h.rawReorder
			c.Skipped += int(h.skipped)
			for _, seq := range h.outOfOrderSeqs {
				problems = append(problems, Problem{Kind: KindOutOfOrder, Group: id, Member: member, Seq: seq,
					Detail: fmt.Sprintf("seq %d was handed over after a later one", seq)})
			}
			var top uint64
			for seq, hm := range h.held {
				top = max(top, seq)
				switch hm.src {
				case clientkit.Live:
					c.Live++
				default:
					c.CaughtUp++
				}
			}
			for _, run := range missingRuns(h.held, top) {
				c.Gaps += int(run[1] - run[0] + 1)
				problems = append(problems, Problem{Kind: KindGap, Group: id, Member: member, Seq: run[0],
					Detail: fmt.Sprintf("holds seq %d but not %s", top, seqRange(run[0], run[1]))})
			}
		}
		for _, p := range r.conflicts {
			if p.Group == id {
				c.Duplicates++
				problems = append(problems, p)
			}
		}
		setLags(c, lags)
		allLags = append(allLags, lags...)
		rep.Groups = append(rep.Groups, gr)
		rep.Totals.add(gr.Counts)
	}
	rep.Totals.Foreign = r.foreign
	setLags(&rep.Totals, allLags)
	sortProblems(problems)
	if len(problems) > maxListed {
		rep.Unlisted = len(problems) - maxListed
		problems = problems[:maxListed]
	}
	rep.Problems = problems
	return rep
}

func lostDetail(m *message) string {
	state := "committed"
	if m.accepted {
		state = "accepted"
		if !m.committedLater {
			state += ", never seen committed"
		}
	}
	s := fmt.Sprintf("message %s (%s", m.key.clientMsgID, state)
	if m.seq > 0 {
		s += fmt.Sprintf(" at seq %d", m.seq)
	}
	return s + ") never reached this member"
}

// add adds o's counts to c; lags are set separately.
func (c *Counts) add(o Counts) {
	c.Messages += o.Messages
	c.Attempts += o.Attempts
	c.SendErrors += o.SendErrors
	c.Unacknowledged += o.Unacknowledged
	c.Committed += o.Committed
	c.Accepted += o.Accepted
	c.AcceptedCommitted += o.AcceptedCommitted
	c.Receipts += o.Receipts
	c.ReceiptErrors += o.ReceiptErrors
	c.Expected += o.Expected
	c.Delivered += o.Delivered
	c.Live += o.Live
	c.CaughtUp += o.CaughtUp
	c.Lost += o.Lost
	c.LostMessages += o.LostMessages
	c.Duplicates += o.Duplicates
	c.OutOfOrder += o.OutOfOrder
	c.Gaps += o.Gaps
	c.Skipped += o.Skipped
	c.RawDuplicates += o.RawDuplicates
	c.RawReordered += o.RawReordered
	c.Redelivered += o.Redelivered
	c.Foreign += o.Foreign
}

func setLags(c *Counts, lags []time.Duration) {
	if len(lags) == 0 {
		return
	}
	slices.Sort(lags)
	c.LagP50 = percentile(lags, 0.50)
	c.LagP99 = percentile(lags, 0.99)
	c.LagMax = lags[len(lags)-1]
}

// percentile of sorted, by the nearest-rank method.
func percentile(sorted []time.Duration, p float64) time.Duration {
	i := int(p*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// missingRuns returns the runs [from, to] of seqs in 1..top not in held.
func missingRuns[V any](held map[uint64]V, top uint64) [][2]uint64 {
	var runs [][2]uint64
	for seq := uint64(1); seq <= top; seq++ {
		if _, ok := held[seq]; ok {
			continue
		}
		if n := len(runs); n > 0 && runs[n-1][1] == seq-1 {
			runs[n-1][1] = seq
		} else {
			runs = append(runs, [2]uint64{seq, seq})
		}
	}
	return runs
}

func seqRange(from, to uint64) string {
	if from == to {
		return fmt.Sprint(from)
	}
	return fmt.Sprintf("%d-%d", from, to)
}

var kindOrder = map[Kind]int{
	KindLost: 0, KindDuplicate: 1, KindOutOfOrder: 2, KindGap: 3,
	KindMissing: 4, KindMismatch: 5, KindUnreadable: 6,
}

func sortProblems(ps []Problem) {
	slices.SortFunc(ps, func(a, b Problem) int {
		return cmp.Or(
			cmp.Compare(kindOrder[a.Kind], kindOrder[b.Kind]),
			cmp.Compare(a.Group, b.Group),
			cmp.Compare(a.Member, b.Member),
			cmp.Compare(a.Seq, b.Seq),
			cmp.Compare(a.Detail, b.Detail),
		)
	})
}
