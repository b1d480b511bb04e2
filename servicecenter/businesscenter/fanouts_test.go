package businesscenter

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	recordv1 "github.com/roamfed/roamfed/api/record/v1"
)

func TestSplitFanouts(t *testing.T) {
	item := func(i, body int) *recordv1.Fanout {
		return &recordv1.Fanout{
			Message:    &recordv1.Message{GroupId: "g_1", MessageId: fmt.Sprint("m_", i), Seq: uint64(i), Body: strings.Repeat("x", body)},
			Recipients: []string{"u_1", "u_2"},
		}
	}
	items := func(bodies ...int) []*recordv1.Fanout {
		var out []*recordv1.Fanout
		for i, b := range bodies {
			out = append(out, item(i+1, b))
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		items []*recordv1.Fanout
		limit int
		want  []int // items per part
	}{
		{"none", nil, 1000, nil},
		{"all fit", items(10, 10, 10), 1000, []int{3}},
		{"cut where the limit falls", items(300, 300, 300, 300), 700, []int{2, 2}},
		{"one too large goes alone", items(10, 2000, 10), 1000, []int{1, 1, 1}},
		{"each alone", items(600, 600, 600), 700, []int{1, 1, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parts := splitFanouts(tc.items, tc.limit)
			var got []int
			var joined []*recordv1.Fanout
			for _, p := range parts {
				got = append(got, len(p))
				joined = append(joined, p...)
				if n := proto.Size(&recordv1.Fanouts{Items: p}); n > tc.limit && len(p) > 1 {
					t.Errorf("a part of %d items is %d bytes; the limit is %d", len(p), n, tc.limit)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("parts of %v items; want %v", got, tc.want)
			}
			if !slices.Equal(joined, tc.items) {
				t.Error("the parts are not the items in order")
			}
		})
	}
}
