// Package mesh keeps a region's links to its peers healthy and decides how
// traffic reaches each peer (DESIGN.md flow 6).
//
// # Links
//
// Every peer gets a heartbeat every HeartbeatEvery on a connection of its
// own that always goes direct. A link that misses MissThreshold heartbeats
// in a row is down; one answered heartbeat brings it up again. The link
// table keeps each link's state, a moving average of its round trip time
// and its last error. Heartbeat answers carry the peer's own link views, so
// each region knows the links of its peers as well as its own.
//
// # Routes
//
// Traffic to a peer uses connections made by RoutedDial: direct when the
// link is up, else through the healthy third region whose round trips
// (here to it, and it to the destination) add up least. A relayed
// connection is a Relay stream to the third region, which pipes the bytes
// to the destination; the bytes are the origin's own gRPC connection, so
// the relaying region does not read or store them. A relay open names
// origin, destination, the hops so far and a hop limit; a region that finds
// itself among the hops refuses it, so relays cannot loop.
//
// When a link goes down, the mesh closes the direct traffic connections to
// that peer, and gRPC redials through a relay; when it comes back up, the
// mesh closes the relayed ones, and traffic returns to the direct link.
// Changed is called after each such change so that callers can cut their
// reconnect backoff.
// WaitRoute waits for a route to a peer, for a caller that would rather
// wait a moment than fail; WaitLinkUp waits for the direct link itself.
//
// # Integrity
//
// Every connection between two regions is their own mutually
// authenticated TLS 1.3, end to end, also through a relay: the relaying
// region pipes ciphertext. Credentials wraps the TLS credentials of the
// region's links so that a connection closed because a record from the
// peer failed TLS's authentication (bytes altered by a relay or on the
// network) is counted once against that peer (LinkStatus.IntegrityFailures,
// IntegrityFailures) and logged. Nothing of such a record reaches gRPC;
// the calls on the connection fail and are resent on a new one.
//
// # Drills
//
// Cut makes this region's side of a link behave as if the network failed:
// its direct connections to the peer stall in both directions without
// closing (heartbeats included), and new ones hang. A drill is applied at
// both ends (each stalls the connections it dialed), so all traffic on the
// link stops. Restore undoes it and sends a heartbeat at once rather than
// at the next tick, so a restored link is seen up, and routable, about one
// round trip later.
//
// # Lifecycle
//
// New makes a Mesh; Start runs heartbeats with a client that reaches peers
// over DirectDial; Close stops them and closes every tracked connection.
package mesh
