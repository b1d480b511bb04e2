// Package bus connects a region's service-center nodes to their shared NATS
// bus: by default a nats-server embedded in the process and reached without
// a socket, or an external NATS server or cluster given by URL.
//
// Open returns a connected Bus; Close drains the connection and then shuts
// the embedded server down, so a caller closes its subscribers' users first.
package bus

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Options say which bus to use.
type Options struct {
	// URL of an external NATS server or cluster (comma-separated). Empty
	// embeds a server in the process.
	URL string
	// Name identifies this connection in NATS monitoring.
	Name string
	// Logger; nil discards.
	Logger *slog.Logger
	// MaxPayload of the embedded server; 0 means 8 MiB, enough for a
	// delivery batch of maximum-size messages.
	MaxPayload int32
}

// Bus is a connection to the region's bus.
type Bus struct {
	conn     *nats.Conn
	embedded *server.Server
	log      *slog.Logger
	closed   chan struct{} // closed by the connection's closed handler
}

// Open connects to the bus, starting the embedded server when no URL is
// given.
func Open(o Options) (*Bus, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxPayload == 0 {
		o.MaxPayload = 8 << 20
	}
	b := &Bus{log: o.Logger, closed: make(chan struct{})}
	opts := []nats.Option{
		nats.ClosedHandler(func(*nats.Conn) { close(b.closed) }),
		nats.Name(o.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				b.log.Warn("bus disconnected", slog.Any("err", err))
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			b.log.Info("bus reconnected", slog.String("url", c.ConnectedUrlRedacted()))
		}),
	}
	url := o.URL
	if url == "" {
		ns, err := server.NewServer(&server.Options{
			ServerName: o.Name,
			DontListen: true,
			NoLog:      true,
			NoSigs:     true,
			MaxPayload: o.MaxPayload,
		})
		if err != nil {
			return nil, fmt.Errorf("nats-server new: %w", err)
		}
		ns.Start()
		if !ns.ReadyForConnections(10 * time.Second) {
			ns.Shutdown()
			return nil, errors.New("nats-server: not ready within 10s")
		}
		b.embedded = ns
		opts = append(opts, nats.InProcessServer(ns))
	}
	conn, err := nats.Connect(url, opts...)
	if err != nil {
		if b.embedded != nil {
			b.embedded.Shutdown()
		}
		return nil, fmt.Errorf("nats connect %q: %w", url, err)
	}
	b.conn = conn
	return b, nil
}

// Conn is the connection, for publishing and subscribing.
func (b *Bus) Conn() *nats.Conn { return b.conn }

// Embedded reports whether the bus runs inside this process.
func (b *Bus) Embedded() bool { return b.embedded != nil }

// Close flushes and closes the connection, then stops an embedded server.
func (b *Bus) Close() {
	if err := b.conn.Drain(); err == nil {
		// Drain finishes asynchronously, bounded by the connection's
		// drain timeout, and then closes the connection.
		<-b.closed
	}
	b.conn.Close()
	if b.embedded != nil {
		b.embedded.Shutdown()
		b.embedded.WaitForShutdown()
	}
}
