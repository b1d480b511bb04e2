// Package testnet has the network helpers tests share.
package testnet

import (
	"net"
	"testing"
)

// FreeAddrs returns n distinct loopback addresses that were free a moment
// ago, for files that must name addresses before their listeners start (a
// federation file). All n are held open until every one is picked, so none
// comes twice; another process may still take one in between, so prefer
// port 0 and the address a listener reports wherever that will do.
func FreeAddrs(t testing.TB, n int) []string {
	t.Helper()
	addrs := make([]string, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("finding a free port: %v", err)
		}
		defer l.Close()
		addrs = append(addrs, l.Addr().String())
	}
	return addrs
}
