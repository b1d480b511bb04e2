// Package datacenter is a region's durable store: user accounts, group data,
// each group's message log, login sessions and delivery cursors, kept in one
// Pebble database.
//
// # Lifecycle
//
// Open a Store with Open and Close it after every user of it has stopped.
// Close waits for the commit queue to drain: every Append that returned nil
// before Close is on disk.
//
// # Durability
//
// A write that this package reports as done has been synced to disk (Pebble's
// Sync), except delivery cursors, which are hints and may lose their last
// moments in a crash. Message appends go through one commit queue: Appends
// that arrive while a sync is in flight are written together and share the
// next sync, so committed throughput is not one fsync per message.
//
// # Sequence numbers
//
// Each group's log is numbered 1, 2, 3, ... with no gaps. The commit queue
// assigns numbers in the order it writes them, and a failed write assigns
// none. A message carries its sender's idempotency key (client_msg_id): the
// same (group, sender, client_msg_id) appended twice returns the first
// message and stores nothing.
//
// # Key layout
//
// Every key begins with a one-byte table tag and a '/'. Ids never contain
// '/' (see internal/ids), so the parts of a key cannot run into each other.
// Sequence numbers are 8-byte big-endian so that keys sort in log order.
//
//	u/<user_id>                          record.v1.User
//	n/<username>                         user_id
//	t/<sha256(token)>                    record.v1.SessionToken
//	g/<group_id>                         record.v1.Group
//	b/<user_id>/<group_id>               empty: user is a member of group
//	m/<group_id>/<seq:8>                 record.v1.Message
//	i/<group_id>/<sender_id>/<client_msg_id>   seq:8
//	c/<user_id>/<group_id>               seq:8, the last sequence the user acknowledged
//	d/<kind>/<key>                       roaming.v1.DirectoryRecord: where a user, username or group lives
//	e/<owner>/<batch:4>/<kind>/<key>     empty: the record is in owner's directory batch
//	v/<owner>/<batch:4>                  roaming.v1.BatchVersion of owner's batch
//	o/<peer>/<seq:8>                     record.v1.OutboxEntry: cross-region work waiting for peer
//	a/<user_id>/<region>                 unix nanos:8: region may act for the user until then
//
// Records are protobuf (api/record/v1); a reader ignores fields it does not know.
package datacenter
