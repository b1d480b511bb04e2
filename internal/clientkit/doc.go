// Package clientkit holds what programs that talk to roamfed regions as a
// client or an operator share: dialing a region with the bearer token a
// call needs, reading a group's history page by page, and a Follower that
// keeps a user's Session stream open and hands the application each
// message of a group once, in sequence order.
//
// roamctl and the e2e drills use it; roamchat predates it and keeps its
// own copies.
//
// Nothing here is process-wide. A Follower is started by Run and stops
// when Run returns, after the goroutines it started have ended; the
// caller owns the gRPC connection it was given and closes it afterwards.
package clientkit
