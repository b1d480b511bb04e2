// Package certs is the federation's public key infrastructure: one
// federation CA, and one certificate per region signed by it, which the
// region presents both as the server of its roaming listener and as the
// client of every connection it makes to a peer (mutual TLS).
//
// # Identity
//
// A region's identity is the single URI SAN roamfed://region/<name> of its
// certificate ([RegionOf]); the common name is informational. A
// certificate with no such URI, two of them, or a malformed name
// identifies no region and is refused in the handshake. Region names
// follow the federation file's rule, ^[a-z][a-z0-9-]{0,31}$.
//
// Host names are not part of the identity. A region dials a peer by the
// roaming_addr of the federation file, but the connection may go through
// a relay tunnel (roaming/mesh), so the client side ([Material.ClientTLS])
// checks that the server's chain ends at the federation CA and that its
// certificate names the region it meant to reach, and nothing about the
// dialed host. Certificates still carry the roaming host as a DNS or IP
// SAN (plus localhost, 127.0.0.1 and ::1) so that ordinary TLS tools can
// talk to a region.
//
// The server side ([Material.ServerTLS]) requires a client certificate
// that chains to the CA and names a region. Which regions may call is the
// federation's business, not the CA's: the roaming server's interceptors
// read the caller with [PeerRegion] and refuse a region that is not a
// peer. [CheckClaim] compares the certificate with a region named in
// request metadata, so that a region cannot speak for another.
//
// # Files
//
// A certificate directory holds PEM files:
//
//	ca.pem             the federation CA certificate; every region needs it
//	ca-key.pem         the CA's private key (0600); keep it offline, off the regions
//	<region>.pem       the region's certificate
//	<region>-key.pem   the region's private key (0600); only that region needs it
//
// [Init] creates the CA and every region's pair and refuses to overwrite
// any file that exists; [InitWith] with Force replaces them. [Issue] adds
// or renews one region's pair with the CA already in the directory, which
// is how a region joins the federation or renews before its certificate
// expires. [Load] reads what one region needs (ca.pem and its own pair)
// and checks it: the pair matches, chains to the CA, is valid now, and
// names the region. ca.pem may hold several CA certificates, all trusted,
// which lets a federation move to a new CA without a flag day.
//
// [EnsureDev] is for `regiond dev` and tests: it creates whatever is
// missing, expired or no longer matching the federation file, and keeps
// the rest.
//
// # Keys and lifetimes
//
// Keys are ECDSA P-256, stored as PKCS #8. The CA is valid for
// [CAValidity] (10 years); region certificates for [RegionValidity]
// (1 year) and never past the CA. There is no revocation list: a region
// whose key is stolen is cut off by re-keying the federation (a new CA in
// every region's ca.pem, new region certificates), which is why region
// certificates are short-lived.
//
// Everything here is plain data and functions: no goroutines, nothing
// process-wide, and a *Material is safe for concurrent use.
package certs
