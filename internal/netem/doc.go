// Package netem injects faults into the links between regions: a one-way
// delay, and cutting a link and restoring it. It works under gRPC, as the
// dialer of a client conn (grpc.WithContextDialer), so the region code under
// test runs unchanged.
//
// # Model
//
// A Link is this process's side of the connection to one peer address. Every
// conn dialled through a Link is wrapped: the bytes it writes and the bytes it
// reads each pass through a delay line, a FIFO that holds each chunk until
// its due time (when it entered plus the link's delay) and then hands it on.
// The delay is therefore applied once in each direction, on the dialling
// side only: a request/response round trip over a link with delay d takes 2d
// longer, and one region's messages to a peer arrive d late whichever side
// dialled. Order is preserved and writes pipeline: a Write returns as soon as
// its bytes are queued, not after the delay. SetDelay applies to bytes that
// enter a line afterwards; bytes never overtake earlier ones.
//
// Cut makes every conn of the link, current and future, stop forwarding in
// both directions without closing: writes are buffered (up to maxQueued
// bytes per direction, after which Write blocks, as a full socket buffer
// would), bytes from the peer are buffered the same way, and Read blocks.
// Nothing is lost or reordered: Restore resumes forwarding and the buffered
// bytes flow at once, as TCP would after a partition that healed before its
// timeouts. A conn dialled while the link is cut connects (the TCP handshake
// is real) and then stalls. Whatever notices a long cut - gRPC keepalive, a
// read deadline - is the caller's: netem never closes a conn itself.
//
// # Ownership
//
// A conn belongs to whoever dialled it (for a gRPC client conn, gRPC).
// Close closes the socket at once, discarding bytes still in its delay
// lines, as a reset would, and waits for the conn's two goroutines. Read and
// write deadlines are honoured by the wrapper, not passed to the socket.
//
// Net maps peer addresses to Links so that one dialer (Net.Dial, for
// stack.Config.Dial) or dial option (Net.DialOption) serves every peer of a
// region; its key is the address dialled, which for an IP literal target is
// the target itself.
package netem
