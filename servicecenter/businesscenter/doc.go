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
// # Errors
//
// Handlers return domain errors (this package's, datacenter's, validate's,
// resourcepool's). They become gRPC status codes at the RPC boundary, in
// api/rpcstatus, which the gRPC server must install as interceptors.
package businesscenter
