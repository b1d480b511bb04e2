// Package cli holds what roamfed's command-line programs (roamchat,
// roamctl) share in how they talk to a person: the marking of a wrong
// command line, the checking of positional arguments, and gRPC codes as a
// person reads them.
//
// It holds no state; each program keeps its own flags, exit codes and
// wording of errors, and uses these pieces where its logic is the same.
package cli
