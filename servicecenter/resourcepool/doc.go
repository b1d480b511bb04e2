// Package resourcepool is the service center's budget for client-facing work.
//
// A [Pool] answers one question per piece of work: may it go ahead? It keeps
// four budgets, set by [Limits]:
//
//   - concurrent Session streams in the region ([Pool.AcquireSession]),
//   - the size of one message body ([Pool.CheckMessageSize]),
//   - each user's send rate, a token bucket per user ([Pool.AllowSend]),
//   - deliveries queued for one session ([Pool.RefuseQueue]; the caller owns
//     the queue and its length, the pool only records and words the refusal).
//
// Work over budget is refused, never dropped silently: every refusal is a
// [*QuotaError], counted by [Reason] in [Pool.Usage]. A QuotaError carries
// its own gRPC status (codes.ResourceExhausted with an errdetails.QuotaFailure,
// plus an errdetails.RetryInfo for send rate and sessions), so an RPC handler may return
// it as is and the client learns which limit it hit and its value.
//
// # Subjects
//
// Every check takes the subject the refusal is about, used verbatim as
// QuotaError.Subject and the QuotaFailure violation subject: "user:<id>" for
// a user's work, "region" for the region as a whole. An empty subject
// becomes "region". AllowSend takes a bare user id and uses "user:<id>".
//
// # Lifecycle
//
// New returns a ready Pool; there is nothing to start or stop, and the Pool
// runs no goroutines. The caller that acquires a session owns the release
// func and must call it when the stream ends; calling it more than once is
// harmless. All methods are safe for concurrent use.
//
// # Memory
//
// AllowSend keeps a limiter per user. A limiter whose bucket is full behaves
// exactly like a new one, so limiters that are full and unused for a while
// are dropped. The sweep runs inside AllowSend, at most once a minute unless
// the number of tracked senders has doubled since the last sweep; its cost,
// spread over the calls that grew the map, is constant per call. The map
// thus holds about the users who sent in the last minute or two.
//
// Limits should be checked with [Limits.Validate] when configuration is read;
// New does not fail, and replaces any value Validate rejects with its default.
package resourcepool
