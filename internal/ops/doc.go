// Package ops is what an operator sees of one region: an HTTP listener,
// apart from the client, roaming and admin ports, that serves
//
//	/metrics          Prometheus metrics of this region (its own registry)
//	/healthz          200 while the process runs
//	/readyz           200 while the region serves (data center open,
//	                  federation loaded, listeners up); 503 otherwise
//	/debug/pprof/...  the runtime profiles (net/http/pprof, on this mux)
//	/                 the status page: the federation as a picture, live
//	/events           server-sent events: a federation View every 500ms
//	/api/status       the same View as JSON, for polling and scripts;
//	                  ?scope=region answers this region's Status only
//	/api/drill        POST: cut or restore a link, with the admin token
//
// # Metrics
//
// NewMetrics makes a region's registry. Nothing is registered globally, so
// several regions run in one process (`regiond dev`, tests). The parts of
// the region feed it in three ways, cheapest first: state they already keep
// is read at scrape time through the function given to SetStatus (sessions,
// refusals, the link table, outbox depths, relays); client calls are counted
// by gRPC interceptors (sends by result, deliveries); and two hooks observe
// what only their package sees (ObserveCommit from the data center,
// ObserveInbound from the roaming business module).
//
// Cross-region delivery latency is measured where a message arrives, as
// the receiving region's clock minus the home's committed_at. It is only as
// good as the two regions' clocks agree: a skew of s shifts every sample by
// s. Keep the regions on NTP; negative samples (the receiver's clock behind)
// are counted as 0.
//
// # The status page and other regions
//
// The page asks its own region for a View. The region answers with its own
// Status and, for every other region of the federation, that region's Status
// fetched from its ops listener (metrics_addr in the federation file,
// /api/status?scope=region) with a short timeout; a region that does not
// answer is shown as unreachable. Each link is drawn from both ends' rows.
//
// # Drills
//
// /api/drill takes {"action":"cut"|"restore","a":..,"b":..,"reason":..}
// with "Authorization: Bearer <admin token>", the token of the region's
// admin API, compared in constant time. A drill on a link of this region
// goes to Config.Drill; a drill on another link is passed, with the same
// header, to the ops listener of one of its ends.
//
// # Lifecycle
//
// Start listens and serves until Shutdown, which ends the event streams,
// waits for calls in flight until its context ends, and is idempotent. The
// caller owns the Metrics and the functions in Config, which must be safe
// to call from any goroutine until Shutdown returns.
package ops
