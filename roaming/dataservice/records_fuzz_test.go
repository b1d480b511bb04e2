package dataservice

import (
	"errors"
	"log/slog"
	"testing"

	"google.golang.org/protobuf/proto"

	recordv1 "github.com/roamfed/roamfed/api/record/v1"
	roamingv1 "github.com/roamfed/roamfed/api/roaming/v1"
	"github.com/roamfed/roamfed/internal/ids"
	"github.com/roamfed/roamfed/internal/validate"
	"github.com/roamfed/roamfed/roaming/resourcepool"
	"github.com/roamfed/roamfed/servicecenter/datacenter"
)

// The directory that FuzzPeerRecord's region eu holds. The ids are fixed
// so that the committed seed corpus (testdata/fuzz/FuzzPeerRecord) can
// name them.
const (
	fuzzErin    = "u_01JE0000000000000000E00001" // eu's user "erin"
	fuzzUma     = "u_01JE00000000000000005A0001" // us's user "uma"
	fuzzUsGroup = "g_01JE00000000000000005A0002"
	fuzzAnn     = "u_01JE0000000000000000A00001" // ap's user "ann"
	fuzzApGroup = "g_01JE0000000000000000A00002"
	fuzzGone    = "u_01JE00000000000000005A0003" // us's user "gone", deleted
)

// maxRefusalBytes bounds the text of a refusal: it quotes what a peer sent
// into a log line, so a peer must not be able to make it long.
const maxRefusalBytes = 512

// fuzzPeers are the peers a record may come from; fuzzRegions the whole
// federation.
var (
	fuzzPeers   = [...]string{"ap", "us"}
	fuzzRegions = map[string]bool{"ap": true, "eu": true, "us": true}
)

// fuzzRecordClient is region eu's Client over a real data center that
// homes erin, and holds us's uma (user and username), a group of us's, a
// user us deleted, and ap's ann and a group of ap's.
func fuzzRecordClient(f *testing.F) *Client {
	f.Helper()
	for _, id := range []string{fuzzErin, fuzzUma, fuzzAnn, fuzzGone} {
		if !ids.Valid(ids.User, id) {
			f.Fatalf("%s is not a user id", id)
		}
	}
	for _, id := range []string{fuzzUsGroup, fuzzApGroup} {
		if !ids.Valid(ids.Group, id) {
			f.Fatalf("%s is not a group id", id)
		}
	}
	store, err := datacenter.Open(f.TempDir(), datacenter.Options{Region: "eu"})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = store.Close() })
	if err := store.CreateUser(&recordv1.User{Id: fuzzErin, Name: "erin", HomeRegion: "eu"}); err != nil {
		f.Fatal(err)
	}
	if err := store.ApplyDirectory("us", fullUpdates(
		&roamingv1.DirectoryRecord{Kind: kUser, Key: fuzzUma, UserId: fuzzUma, HomeRegion: "us"},
		&roamingv1.DirectoryRecord{Kind: kUsername, Key: "uma", UserId: fuzzUma, HomeRegion: "us"},
		&roamingv1.DirectoryRecord{Kind: kGroup, Key: fuzzUsGroup, HomeRegion: "us"},
		&roamingv1.DirectoryRecord{Kind: kUser, Key: fuzzGone, UserId: fuzzGone, HomeRegion: "us", Deleted: true},
	)); err != nil {
		f.Fatal(err)
	}
	if err := store.ApplyDirectory("ap", fullUpdates(
		&roamingv1.DirectoryRecord{Kind: kUser, Key: fuzzAnn, UserId: fuzzAnn, HomeRegion: "ap", Location: "us"},
		&roamingv1.DirectoryRecord{Kind: kUsername, Key: "ann", UserId: fuzzAnn, HomeRegion: "ap"},
		&roamingv1.DirectoryRecord{Kind: kGroup, Key: fuzzApGroup, HomeRegion: "ap"},
	)); err != nil {
		f.Fatal(err)
	}
	// Nothing is dialled: the checks read only the data center.
	peers, err := resourcepool.NewPeers(resourcepool.Config{Self: "eu", Addrs: map[string]string{"ap": "127.0.0.1:1", "us": "127.0.0.1:1"}})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = peers.Close() })
	return NewClient("eu", peers, store, slog.New(slog.DiscardHandler))
}

// FuzzPeerRecord feeds checkRecord, and checkUpdates, a directory record
// from a peer built from the fuzzer's fields. Neither may panic; both must
// answer the same for the same record and leave it as it was; a record is
// taken only if it keeps every rule of checkRecord (checked here against
// internal/ids, internal/validate and the data center directly); a refusal
// is short; and checkUpdates keeps the record exactly when checkRecord
// takes it and it is filed in its own batch, counting every refusal.
func FuzzPeerRecord(f *testing.F) {
	c := fuzzRecordClient(f)
	for _, s := range []struct {
		peer                 uint8
		kind                 int32
		key, user, home, loc string
		deleted              bool
		shift                uint32
	}{
		{0, int32(kUser), fuzzAnn, fuzzAnn, "ap", "us", false, 0},
		{0, int32(kUsername), "ann", fuzzAnn, "ap", "", false, 0},
		{0, int32(kGroup), fuzzApGroup, "", "ap", "", true, 0},
		{1, int32(kUser), fuzzUma, fuzzUma, "us", "", false, 0},
		{0, int32(kUser), fuzzUma, fuzzUma, "ap", "", false, 0},
		{0, int32(kUser), fuzzErin, fuzzErin, "ap", "", false, 0},
		{0, int32(kUser), fuzzGone, fuzzGone, "ap", "", false, 0},
		{0, int32(kGroup), fuzzUsGroup, "", "ap", "", false, 0},
		{0, int32(kGroup), fuzzApGroup, "", "ap", "", false, 1},
		{0, int32(kGroup), fuzzApGroup, "", "ap", "", false, datacenter.DirectoryBatches},
		{0, 42, fuzzAnn, fuzzAnn, "ap", "", false, 0},
		{0, int32(kUser), fuzzAnn, fuzzAnn, "ap", "zz", false, 0},
		{0, int32(kGroup), fuzzApGroup, "", "ap", "eu", false, 0},
	} {
		f.Add(s.peer, s.kind, s.key, s.user, s.home, s.loc, s.deleted, s.shift)
	}
	f.Fuzz(func(t *testing.T, peerIdx uint8, kind int32, key, user, home, loc string, deleted bool, shift uint32) {
		peer := fuzzPeers[int(peerIdx)%len(fuzzPeers)]
		rec := &roamingv1.DirectoryRecord{
			Kind: roamingv1.DirectoryKind(kind), Key: key, UserId: user,
			HomeRegion: home, Location: loc, Deleted: deleted,
		}
		orig := proto.Clone(rec).(*roamingv1.DirectoryRecord)

		err := c.checkRecord(peer, rec)
		if again := c.checkRecord(peer, rec); errText(again) != errText(err) {
			t.Fatalf("checkRecord(%s, %v) = %v, then %v", peer, rec, err, again)
		}
		if !proto.Equal(rec, orig) {
			t.Fatalf("checkRecord changed the record %v to %v", orig, rec)
		}
		if err != nil && len(err.Error()) > maxRefusalBytes {
			t.Fatalf("refusal of %d bytes, over %d: %.200q...", len(err.Error()), maxRefusalBytes, err.Error())
		}
		if err == nil {
			if why := brokenRule(c, peer, rec); why != "" {
				t.Fatalf("checkRecord(%s, %v) took a record that %s", peer, rec, why)
			}
		}

		batch := datacenter.DirectoryBatch(rec.GetKind(), key) + shift
		version := &roamingv1.BatchVersion{Batch: batch, Major: 1, Minor: 2}
		in := []*roamingv1.BatchUpdate{{Version: version, Full: deleted, Records: []*roamingv1.DirectoryRecord{rec}}}
		before := c.Refused()[peer]
		out := c.checkUpdates(peer, in)
		refused := c.Refused()[peer] - before
		if batch >= datacenter.DirectoryBatches {
			if len(out) != 0 || refused != 1 {
				t.Fatalf("update for batch %d, out of range: kept %v, %d refused; want dropped, 1 refused", batch, out, refused)
			}
			return
		}
		if len(out) != 1 || !proto.Equal(out[0].GetVersion(), version) || out[0].GetFull() != deleted {
			t.Fatalf("checkUpdates kept %v; want one update at %v, full %v", out, version, deleted)
		}
		keep := err == nil && shift == 0
		if kept := len(out[0].GetRecords()) == 1; kept != keep || len(out[0].GetRecords()) > 1 {
			t.Fatalf("checkUpdates(%s, %v in batch %d) kept %v; want kept %v (checkRecord: %v)", peer, rec, batch, out[0].GetRecords(), keep, err)
		}
		if keep && !proto.Equal(out[0].GetRecords()[0], orig) {
			t.Fatalf("checkUpdates kept %v; want %v as sent", out[0].GetRecords()[0], orig)
		}
		if want := map[bool]uint64{true: 0, false: 1}[keep]; refused != want {
			t.Fatalf("checkUpdates kept the record: %v, and counted %d refused; want %d", keep, refused, want)
		}
	})
}

// brokenRule says which rule of checkRecord rec breaks, or "" if none;
// it restates the rules independently of checkRecord.
func brokenRule(c *Client, peer string, rec *roamingv1.DirectoryRecord) string {
	key, user := rec.GetKey(), rec.GetUserId()
	switch {
	case rec.GetHomeRegion() != peer:
		return "is not homed at the peer"
	case rec.GetKind() == kUser && !(ids.Valid(ids.User, key) && user == key):
		return "is a user record not keyed by its own well-formed user id"
	case rec.GetKind() == kUsername && !(validate.Username("key", key) == nil && ids.Valid(ids.User, user)):
		return "is a username record without a well-formed username and user id"
	case rec.GetKind() == kGroup && !(ids.Valid(ids.Group, key) && user == ""):
		return "is a group record without a well-formed group id, or naming a user"
	case rec.GetKind() != kUser && rec.GetKind() != kUsername && rec.GetKind() != kGroup:
		return "is of no known kind"
	case rec.GetLocation() != "" && rec.GetKind() != kUser:
		return "has a location but is not a user's"
	case rec.GetLocation() != "" && !fuzzRegions[rec.GetLocation()]:
		return "is located outside the federation"
	}
	cur, err := c.store.Locate(rec.GetKind(), key)
	switch {
	case errors.Is(err, datacenter.ErrNotInDirectory):
	case err != nil:
		return "could not be compared with the directory: " + err.Error()
	case cur.GetHomeRegion() != peer:
		return "takes over a key that " + cur.GetHomeRegion() + " homes"
	}
	return ""
}

func errText(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}
