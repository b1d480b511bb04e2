// Package e2e holds roamfed's end-to-end tests: they build the real
// binaries once, start real regiond processes on loopback, each with its own
// data directory, and drive them with the real roamchat CLI, as an operator
// and users would.
//
// The harness (harness_test.go) is what every test here shares:
//
//   - TestMain builds regiond and roamchat once into a temporary directory,
//     with -race when the tests themselves run with it, and removes it at
//     exit. With -short nothing is built and the tests skip.
//   - startRegion starts one regiond process; a test may start any number,
//     each on a port the kernel picks, and Restart, Stop or Kill them.
//     Extra flags (a federation file, say) are passed through; freeAddrs
//     finds ports for files that must name them in advance.
//   - startFederation writes a federation file for the regions a test
//     names, with addresses from freeAddrs, and starts one regiond per
//     region with --federation and --region; each keeps its data
//     directory and addresses across Restart.
//   - roamchat runs one CLI command as a user of a region, with a profile
//     directory private to the test; startRoamchat runs a long-lived one
//     (tail) whose output lines arrive on a channel.
//   - For checks the CLI cannot make precisely, apiclient_test.go speaks
//     the client API over gRPC: users logged in at a region, a receiver
//     that follows a group on Session streams as a careful app would
//     (acknowledging, ordering, filling gaps from the history), and a
//     sender that retries with the same client_msg_id until committed.
//
// Every wait has a deadline, every process is stopped in t.Cleanup, and a
// failed test prints the logs of the processes it started.
package e2e
