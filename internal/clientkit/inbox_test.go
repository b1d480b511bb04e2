package clientkit

import (
	"fmt"
	"os"
	"slices"
	"testing"

	clientv1 "github.com/roamfed/roamfed/api/client/v1"
)

func TestInbox(t *testing.T) {
	type op struct {
		seq  uint64 // 0 with skip: skip the gap
		id   uint64 // delivery id; 0 for history
		skip bool
	}
	for _, tc := range []struct {
		name      string
		start     uint64
		ops       []op
		wantReady []uint64 // released, in order, over all ops
		wantAck   []uint64
		gapped    bool
		last      uint64
	}{
		{"in order", 0, []op{{1, 11, false}, {2, 12, false}, {3, 0, false}}, []uint64{1, 2, 3}, []uint64{11, 12}, false, 3},
		{"held until the gap fills", 0, []op{{2, 12, false}, {3, 13, false}, {1, 0, false}}, []uint64{1, 2, 3}, []uint64{12, 13}, false, 3},
		{"duplicates acked at once, released once", 0, []op{{1, 11, false}, {1, 21, false}, {1, 0, false}}, []uint64{1}, []uint64{11, 21}, false, 1},
		{"a resend of a held message is acked on release", 0, []op{{2, 12, false}, {2, 22, false}, {1, 11, false}}, []uint64{1, 2}, []uint64{11, 12, 22}, false, 2},
		{"an open gap", 0, []op{{1, 11, false}, {3, 13, false}}, []uint64{1}, []uint64{11}, true, 1},
		{"a skipped gap", 0, []op{{1, 11, false}, {4, 14, false}, {5, 15, false}, {0, 0, true}}, []uint64{1, 4, 5}, []uint64{11, 14, 15}, false, 5},
		{"a late arrival after a skip is a duplicate", 0, []op{{2, 12, false}, {0, 0, true}, {1, 11, false}}, []uint64{2}, []uint64{12, 11}, false, 2},
		{"started past the beginning", 5, []op{{3, 13, false}, {6, 16, false}}, []uint64{6}, []uint64{13, 16}, false, 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := NewInbox()
			b.Follow("g", tc.start)
			var ready, ack []uint64
			for _, o := range tc.ops {
				var r []Released
				var a []uint64
				if o.skip {
					_, _, r, a = b.Skip("g")
				} else {
					var ids []uint64
					src := History
					if o.id != 0 {
						ids, src = []uint64{o.id}, Live
					}
					r, a = b.Add(&clientv1.Message{GroupId: "g", Seq: o.seq, MessageId: fmt.Sprint("m", o.seq)}, src, ids...)
				}
				for _, m := range r {
					ready = append(ready, m.Message.GetSeq())
				}
				ack = append(ack, a...)
			}
			if !slices.Equal(ready, tc.wantReady) {
				t.Errorf("released %v, want %v", ready, tc.wantReady)
			}
			if !slices.Equal(ack, tc.wantAck) {
				t.Errorf("acked %v, want %v", ack, tc.wantAck)
			}
			if got := len(b.Gapped()) > 0; got != tc.gapped {
				t.Errorf("gapped %v, want %v", got, tc.gapped)
			}
			if b.Last("g") != tc.last {
				t.Errorf("last %d, want %d", b.Last("g"), tc.last)
			}
		})
	}
}

func TestInboxUncommittedAndUnknownGroups(t *testing.T) {
	b := NewInbox()
	r, a := b.Add(&clientv1.Message{GroupId: "g", Seq: 0}, Live, 7)
	if len(r) != 0 || !slices.Equal(a, []uint64{7}) {
		t.Errorf("uncommitted message: released %v, acked %v", r, a)
	}
	// A group not followed is followed from its start.
	r, _ = b.Add(&clientv1.Message{GroupId: "h", Seq: 2}, Live, 8)
	if len(r) != 0 || !slices.Equal(b.Gapped(), []string{"h"}) {
		t.Errorf("unknown group at seq 2: released %v, gapped %v", r, b.Gapped())
	}
}

func writeFile(path, content string) error { return os.WriteFile(path, []byte(content), 0o600) }
