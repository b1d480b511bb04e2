// Package businesscenter serves a region's clients: register, login and
// logout, group data, sending group messages, history, and the live Session
// stream that pushes deliveries and presence.
//
// # Lifecycle
//
// New subscribes to the region's bus and hooks the data center's commit
// queue; register the Server on a grpc.Server; call Close after the gRPC
// server has stopped and before the bus and the data center are closed.
// Close ends every Session stream still open.
//
// # Fan-out
//
// A committed message is published once on the bus subject
// roamfed.<region>.fanout with its group's member list, in commit order.
// Every service-center node of the region subscribes and hands it to the
// sessions of those members that it holds, so a region can run several
// nodes on one bus. Presence changes travel the same way on
// roamfed.<region>.presence.
//
// # Delivery
//
// Each delivery on a Session stream has an id that the client acknowledges.
// One that is not acknowledged within AckTimeout is sent again, up to
// MaxAttempts times in all; then, or when the session has more deliveries
// waiting than the resource pool allows, the group's live delivery for that
// session pauses and the client is sent a CatchUp naming the last sequence
// number it is known to have, to fetch the rest with GetHistory. Deliveries
// are never dropped without that notice.
//
// A client that sends a Capabilities frame with deliveries set reads
// Deliveries frames; from then on the session's writer puts the deliveries
// queued behind the one it takes into one such frame, without waiting for
// more, up to 256 deliveries or 1 MiB and up to the first queued frame that
// is not a delivery, which follows the batch. A batch of one, and a
// delivery too large for a batch, still go as a lone Delivery frame, so
// such a client reads both kinds. Each delivery in a frame keeps its own id
// and attempt and is acknowledged, resent and held against the session's
// queue limit on its own; one Ack listing the frame's ids is cheapest. A
// client that sends no Capabilities gets every delivery in a Delivery frame
// of its own.
//
// # Errors
//
// Handlers return domain errors (this package's, datacenter's, validate's,
// resourcepool's). They become gRPC status codes at the RPC boundary, in
// api/rpcstatus, which the gRPC server must install as interceptors.
package businesscenter
