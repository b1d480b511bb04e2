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
//
// A region speaks only for what it homes. Every record a peer publishes,
// or answers to a Locate, is checked before it is stored: its home must be
// that peer, its kind a user, username or group with a well-formed key
// (internal/ids, internal/validate) and the user id that kind calls for, a
// location only on a user and naming a region of the federation, and its
// key must not be one another region homes in this region's directory.
// A record that fails is dropped, the rest of the batch is applied, and
// the refusal is counted per peer (Client.Refused) and logged; what this
// region held stays as it was.
//
// Usernames are unique across the federation although each region
// registers its own users: before storing a user, a region claims the name
// at every peer (Client.ClaimUsername, Server.ClaimUsername; the rules are
// in servicecenter/businesscenter's claims). Of regions registering one
// name at the same moment, at most one stores it; the others answer their
// client ABORTED, and a retry a few seconds later finds the name taken or
// free. A peer that does not answer is passed over, so a region cut off
// from another still registers users, at the risk that the name turns out
// to be taken there (logged).
package dataservice
