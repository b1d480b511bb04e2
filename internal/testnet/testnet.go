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

// DeadAddr returns a loopback address where nothing answers: every
// connection is closed as soon as it is made. The port is held until the
// test ends, so that no other process (a parallel test's region, say) can
// take it and answer in the dead peer's place.
func DeadAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("holding a dead port: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
	})
	return l.Addr().String()
}
