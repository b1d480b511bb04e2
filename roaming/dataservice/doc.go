// Package dataservice is the roaming system's data service module: it
// reads and writes other regions' data centers on behalf of this region,
// and answers other regions for the data this region homes.
//
// The Server side answers DataService calls with the region's Home (the
// authority for what the region homes) and its data center's home
// directory. The Client side makes those calls to a peer and keeps this
// region's copy of every peer's home directory current: Replicate runs one
// round against every peer, sending the batch versions held and applying
// what comes back (Delta decides what that is).
//
// Directory replication follows DESIGN.md flow 8: each region publishes
// its own records in DirectoryBatches batches versioned major.minor; a
// changed minor version is answered with the records changed since, a
// changed major version with the whole batch.
package dataservice
