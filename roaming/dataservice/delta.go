package dataservice

import (
	"maps"
	"slices"

	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
)

// Delta decides what a replica must be sent. own holds the versions of the
// batches the source has published; held the versions the replica has;
// records returns the whole of one of the source's batches. A batch whose
// versions are equal is left out; a replica holding a batch the source no
// longer has gets an empty full batch at version 0.0.
func Delta(own []*roamingv1.BatchVersion, held []*roamingv1.BatchVersion, records func(batch uint32) ([]*roamingv1.DirectoryRecord, error)) ([]*roamingv1.BatchUpdate, error) {
	heldBy := make(map[uint32]*roamingv1.BatchVersion, len(held))
	for _, h := range held {
		heldBy[h.GetBatch()] = h
	}
	var out []*roamingv1.BatchUpdate
	for _, o := range own {
		h, ok := heldBy[o.GetBatch()]
		delete(heldBy, o.GetBatch())
		if ok && h.GetMajor() == o.GetMajor() && h.GetMinor() == o.GetMinor() {
			continue
		}
		recs, err := records(o.GetBatch())
		if err != nil {
			return nil, err
		}
		full := !ok || h.GetMajor() != o.GetMajor() || h.GetMinor() > o.GetMinor()
		u := &roamingv1.BatchUpdate{Version: o, Full: full}
		if full {
			u.Records = recs
		} else {
			for _, r := range recs {
				if r.GetMinor() > h.GetMinor() {
					u.Records = append(u.Records, r)
				}
			}
		}
		out = append(out, u)
	}
	for _, b := range slices.Sorted(maps.Keys(heldBy)) {
		out = append(out, &roamingv1.BatchUpdate{Version: &roamingv1.BatchVersion{Batch: b}, Full: true})
	}
	return out, nil
}
