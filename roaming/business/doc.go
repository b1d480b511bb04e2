// Package business is the roaming system's business module: it carries
// group communication between regions.
//
// Outbound, a Submitter per peer carries messages to the home of their
// group on one long-lived Submit stream, batching those that queue up and
// keeping at most the peer's window in flight; each caller waits for its
// own message's result. A Deliverer per peer carries committed messages and
// presence changes on one Deliver stream the same way, resending what was
// in flight when a stream breaks. Its queue is in memory and bounded
// (Limits.DeliverQueue): a message that finds it full is remembered by the
// Router as its group and seq and sent again from the group's log once
// the queue has room; when the region stops or crashes, what was queued is
// found again at the next start (datacenter.Store.RecentCommits, the
// commits within 10 s of the newest) and routed again. Receivers drop what
// they already had. The Outbox, the
// other way, is durable: a message for a remote home goes to the home
// without waiting for this region's sync, and the sender is answered only
// once the home has committed it (synced there) or, when the home is slow
// to answer, once the outbox is synced and the message "accepted"; it
// leaves the outbox only when the home has answered for it.
//
// The Router decides where committed messages go (DESIGN.md flow 5): it
// splits a group's members by the region each is connected to now (their
// location in the home directory, else their home region) and hands each
// region one Fanout with its recipients. Inbound deliveries are
// de-duplicated by message id and recipient; a recipient homed here but
// connected elsewhere is forwarded there, since the home knows the location
// first. A forward that finds the queue full is held, in order, and sent
// when it has room (at most 4,096 held): this region cannot read it again
// from a log it does not keep.
//
// The Server answers peers: Submit commits through the region's Home,
// Deliver hands batches to the Router, Heartbeat answers.
package business
