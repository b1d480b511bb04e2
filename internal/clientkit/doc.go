// Package clientkit holds what programs that talk to roamfed regions as a
// client or an operator share: dialing a region with the bearer token a
// call needs, reading a group's history page by page, a Stream (one open
// Session stream: the Capabilities opt-in to Deliveries frames, Ready, the
// frames in order, acks and pings), an Inbox that puts each group's
// messages in sequence order once each, and a Follower built on both that
// keeps a user's Session stream open across reconnects and hands the
// application each message of a group once, in sequence order.
//
// roamctl and the e2e drills use the Follower; roamchat's tail and chat
// use Stream and Inbox under a loop of their own, since they also read the
// user's input, print presence and give up on a gap differently.
//
// Nothing here is process-wide. A Stream's receiving goroutine ends with
// Close; a Follower is started by Run and stops when Run returns, after
// the goroutines it started have ended. The caller owns the gRPC
// connection it gave and closes it afterwards.
package clientkit
