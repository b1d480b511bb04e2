// Package roaming is a region's roaming system: the region-facing half of
// a roamfed region (DESIGN.md). A System owns the connections to every peer
// region (resourcepool), the data service module (dataservice) and the
// business module (business), serves the roaming gRPC API on the region's
// roaming address, and implements businesscenter.Roaming, the only way this
// region's service center reaches another region.
//
// # Lifecycle
//
// New prepares the system without listening. The service center is built
// with the System as its Roaming; then Start is given the service center's
// Home (to answer peers) and the service center itself (to take inbound
// deliveries), and starts listening, replicating and sending. Close stops
// the listener, the senders and the replication loop, and waits for them;
// call it before closing the service center and the data center.
package roaming
