package clientkit

import (
	"context"
	"fmt"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
)

// HistoryPage is the largest page a region returns.
const HistoryPage = 1000

// maxHistoryPages bounds one ReadHistory read: 10 million messages.
const maxHistoryPages = 10_000

// HistoryEnd is what a complete ReadHistory read learned.
type HistoryEnd struct {
	// Last is the seq of the last message read; the after argument when
	// none was.
	Last uint64
	// LogLast is the group's latest seq as the last page reported it.
	LogLast uint64
	// Pages is the number of GetHistory calls made.
	Pages int
}

// ReadHistory reads group's messages after after, page by page until the
// region says no more follow, and calls fn for each in the order the
// region returned them. ctx carries the caller's token (WithToken).
//
// A page that is empty yet claims more follow, or whose messages do not
// advance, ends the read with an error rather than looping.
func ReadHistory(ctx context.Context, api clientv1.ClientServiceClient, group string, after uint64, fn func(*clientv1.Message)) (HistoryEnd, error) {
	end := HistoryEnd{Last: after}
	for end.Pages < maxHistoryPages {
		resp, err := api.GetHistory(ctx, &clientv1.GetHistoryRequest{GroupId: group, AfterSeq: end.Last, Limit: HistoryPage})
		end.Pages++
		if err != nil {
			return end, err
		}
		end.LogLast = resp.GetLastSeq()
		from := end.Last
		for _, m := range resp.GetMessages() {
			fn(m)
			end.Last = max(end.Last, m.GetSeq())
		}
		if !resp.GetHasMore() {
			return end, nil
		}
		if end.Last <= from {
			return end, fmt.Errorf("history of %s after %d: the region says more follow but sent nothing past %d", group, from, from)
		}
	}
	return end, fmt.Errorf("history of %s: more than %d pages", group, maxHistoryPages)
}
