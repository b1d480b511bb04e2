// Package checker checks the history of a load run against roamfed's
// guarantees (DESIGN.md, Guarantees): no acknowledged message is lost, none
// is stored twice, and every member of a group gets its messages once
// each, in sequence order, with no gaps.
//
// A Recorder takes what the run's clients saw, from any number of
// goroutines: every send attempt and its answer (committed with a seq, or
// accepted), every receipt, every message as it arrived (live or read from
// history) and every message as the client handed it to its application,
// in order. Its Report, taken once the run has healed and settled, counts
// per group:
//
//   - lost: acknowledged (committed or accepted) messages that some member
//     never got;
//   - duplicates: a message id at two seqs, a seq holding two message ids,
//     or one client_msg_id committed at two seqs;
//   - out of order: messages handed to the application after one with a
//     higher (or the same) seq;
//   - gaps: seqs missing below the highest one a member holds;
//
// all of which must be zero, and, for information, sends, commits,
// accepted messages later committed, raw duplicate arrivals (resends,
// catch-up overlapping live delivery) and delivery lag.
//
// Verify then reads each member's full history of each group from the
// member's own region and checks the log itself: 1 to last with no gaps,
// every acknowledged message in it exactly once, at the seq and with the
// message id that the run was told.
//
// The groups, their members and the users' regions are declared before the
// run (AddUser, AddGroup); members are expected to get every message of a
// group from seq 1.
package checker
