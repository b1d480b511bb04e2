// Package regions reads the federation file: the list of every region of a
// roamfed federation and the addresses of its services.
//
// # The file
//
// One YAML file describes the whole federation, and every region runs with
// the same file, so that all regions agree on who their peers are and where to
// reach them:
//
//	federation: prod            # optional name, for logs and metrics
//	regions:
//	  - name: ap                # the region's identity; never changes once users exist
//	    roaming_addr: ap.roamfed.example.com:7200       # region-to-region gRPC (mTLS)
//	    client_addr: chat-ap.roamfed.example.com:7100   # users connect here
//	    admin_addr: ap.roamfed.internal:7300            # optional: roamctl
//	    metrics_addr: ap.roamfed.internal:7400          # optional: metrics, health, pprof
//	  - name: eu
//	    ...
//
// A region learns which entry is its own from regiond's --region flag, which
// Federation.WithSelf applies. The file may also say `self: <name>`, for
// single-region setups and tests; the flag wins. example-3-regions.yaml is a
// production layout with every field explained; dev.yaml is the three
// loopback regions that `regiond dev` runs in one process, embedded and
// returned by DevFederation.
//
// # How regions use it
//
// A region's roaming system listens on its own roaming_addr and links to
// every other region, Federation.Peers, by dialing their roaming_addr: the
// federation is a full mesh, and a peer not in the file is refused (see
// api/roaming/v1). The service center listens on client_addr. admin_addr and
// metrics_addr, when given, are where the region serves its operator API
// and its metrics; each address is also where others dial, so it names a
// reachable host, never a wildcard.
// Adding or removing a region is a change to this file, rolled out to every
// region.
//
// # Checks and errors
//
// Load and Parse return a Federation only if it passes Validate, whose doc
// lists the rules. Unknown fields are errors, so a misspelt optional field
// cannot go unnoticed. Every error names the file, the line and the field:
//
//	regions/dev.yaml:14: regions[1].roaming_addr: "127.0.0.1" is not host:port (missing port)
//	prod.yaml:20: regions[2].name: "eu" is already the name of regions[1] (line 14)
//
// All problems in a file are reported at once, one per line, as *Error values
// joined with errors.Join.
//
// A Federation is plain data: the package keeps no state, several
// federations can live in one process, and the methods only read. Callers
// that change a Federation from Load should call Validate again.
package regions
