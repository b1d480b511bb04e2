package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/roamfed/roamfed/internal/validate"
)

// config is one benchmark run's settings, from flags.
type config struct {
	// Connect lists the regions of a running federation to drive; empty
	// starts Regions regions in this process.
	Connect []regionAddr
	Regions int

	Groups    int
	GroupSize int
	BodyBytes int
	// ConnsPerRegion is how many client conns the benchmark's users share
	// per region.
	ConnsPerRegion int

	// Rate is the target sends per second; 0 sends as fast as Senders
	// concurrent senders can.
	Rate     float64
	Senders  int
	Warmup   time.Duration
	Duration time.Duration
	// Drain bounds the wait, after the last send, for deliveries still on
	// their way.
	Drain time.Duration

	// LinkDelay is the one-way delay added to every roaming link
	// (in-process only).
	LinkDelay time.Duration
	// PlaintextLinks runs in-process roaming links without mutual TLS,
	// which every real federation uses.
	PlaintextLinks bool

	// IdleRSS measures an idle regiond's memory instead of running load.
	IdleRSS  bool
	IdleWait time.Duration
	// Regiond is a regiond binary for IdleRSS; empty builds one.
	Regiond string
	// TransportFloor runs the load through bare gRPC instead of regions.
	TransportFloor bool

	JSON       bool
	CPUProfile string
	// PprofAddr serves net/http/pprof, with block and mutex profiling on,
	// for looking at where a run waits.
	PprofAddr string
	LogLevel  slog.Level
	// Progress prints a line a second to the progress writer.
	Progress bool
}

// regionAddr is one region of --connect.
type regionAddr struct {
	Name, Addr string
}

// regionNames name the in-process regions, in order.
var regionNames = []string{"ap", "eu", "us", "sa", "af"}

// Bounds of the flags, so that a typo cannot ask for a run that cannot
// finish or fit in memory.
const (
	maxGroups    = 10000
	maxGroupSize = 1000
	maxUsers     = 20000
	maxSenders   = 4096
	maxBodyBytes = 64 << 10
	minBodyBytes = 24 // room for the send timestamp
)

func defaultConfig() config {
	return config{
		Regions:        3,
		Groups:         30,
		GroupSize:      10,
		BodyBytes:      64,
		ConnsPerRegion: 4,
		Senders:        64,
		Warmup:         2 * time.Second,
		Duration:       10 * time.Second,
		Drain:          10 * time.Second,
		IdleWait:       5 * time.Second,
		LogLevel:       slog.LevelError,
		Progress:       true,
	}
}

// parseFlags reads args (without the program name) into a config and
// validates it; errors name the flag.
func parseFlags(args []string, stderr io.Writer) (config, error) {
	cfg := defaultConfig()
	fs := flag.NewFlagSet("roambench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `roambench drives a roamfed federation with group messages and measures
send-to-delivery latency and throughput.

  go run ./cmd/roambench                          three regions in-process
  go run ./cmd/roambench --regions 1 --rate 1000  one region
  go run ./cmd/roambench --link-delay 20ms        20ms one way on every roaming link
  go run ./cmd/roambench --connect ap=127.0.0.1:7101,eu=127.0.0.1:7102,us=127.0.0.1:7103
  go run ./cmd/roambench --idle-rss               memory of one idle regiond process
  go run ./cmd/roambench --transport-floor        the same load through bare gRPC hops: the machine's ceiling

Flags:
`)
		fs.PrintDefaults()
	}
	var connect, logLevel string
	fs.StringVar(&connect, "connect", "", "drive running regions, `name=host:port,...`; empty starts regions in this process")
	fs.IntVar(&cfg.Regions, "regions", cfg.Regions, fmt.Sprintf("regions to start in-process (1 to %d: %s)", len(regionNames), strings.Join(regionNames, ", ")))
	fs.IntVar(&cfg.Groups, "groups", cfg.Groups, "groups; each has its own members, spread over the regions")
	fs.IntVar(&cfg.GroupSize, "group-size", cfg.GroupSize, "members per group")
	fs.IntVar(&cfg.BodyBytes, "body-bytes", cfg.BodyBytes, "message body size")
	fs.IntVar(&cfg.ConnsPerRegion, "conns", cfg.ConnsPerRegion, "client gRPC conns per region, shared by the users there")
	fs.Float64Var(&cfg.Rate, "rate", cfg.Rate, "target messages/s; 0 sends as fast as --senders allow")
	fs.IntVar(&cfg.Senders, "senders", cfg.Senders, "concurrent senders")
	fs.DurationVar(&cfg.Warmup, "warmup", cfg.Warmup, "load before measuring")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "measured load")
	fs.DurationVar(&cfg.Drain, "drain", cfg.Drain, "longest wait for outstanding deliveries after the last send")
	fs.DurationVar(&cfg.LinkDelay, "link-delay", 0, "one-way delay on every roaming link (in-process only)")
	fs.BoolVar(&cfg.PlaintextLinks, "plaintext-links", false, "in-process roaming links without mutual TLS (a real federation always uses it)")
	fs.BoolVar(&cfg.IdleRSS, "idle-rss", false, "build and start one regiond, wait --idle-wait, report its resident memory")
	fs.DurationVar(&cfg.IdleWait, "idle-wait", cfg.IdleWait, "how long regiond idles before --idle-rss reads its memory")
	fs.StringVar(&cfg.Regiond, "regiond", "", "regiond binary for --idle-rss; empty builds ./cmd/regiond")
	fs.BoolVar(&cfg.TransportFloor, "transport-floor", false, "the same load through bare gRPC servers that make only the gRPC hops of roamfed's flows (sender's region, home, recipients' regions): the most any implementation of the design sustains on this machine")
	fs.BoolVar(&cfg.JSON, "json", false, "print the report as JSON")
	fs.StringVar(&cfg.CPUProfile, "cpuprofile", "", "write a CPU profile of the load phase to `file`")
	fs.StringVar(&cfg.PprofAddr, "pprof-addr", "", "serve /debug/pprof/ here (host:port), with block and mutex profiles, while the run lasts")
	fs.StringVar(&logLevel, "log-level", "error", "log level of in-process regions: debug, info, warn or error")
	quiet := fs.Bool("quiet", false, "no progress lines")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	cfg.Progress = !*quiet
	if err := cfg.LogLevel.UnmarshalText([]byte(logLevel)); err != nil {
		return config{}, fmt.Errorf("--log-level %q: %w", logLevel, err)
	}
	if connect != "" {
		var err error
		if cfg.Connect, err = parseConnect(connect); err != nil {
			return config{}, fmt.Errorf("--connect: %w", err)
		}
		set := make(map[string]bool)
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if set["regions"] {
			return config{}, errors.New("--regions is for in-process regions; --connect names the regions")
		}
	}
	return cfg, cfg.validate()
}

// parseConnect reads "ap=host:port,eu=host:port".
func parseConnect(s string) ([]regionAddr, error) {
	var out []regionAddr
	seen := make(map[string]bool)
	for item := range strings.SplitSeq(s, ",") {
		name, addr, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok {
			return nil, fmt.Errorf("%q: want name=host:port", item)
		}
		if err := validate.Username("region", name); err != nil {
			return nil, fmt.Errorf("%q: %w", item, err)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("%q: %w", item, err)
		}
		if seen[name] {
			return nil, fmt.Errorf("region %s named twice", name)
		}
		seen[name] = true
		out = append(out, regionAddr{Name: name, Addr: addr})
	}
	return out, nil
}

// validate checks the settings once, naming the flag of a bad value.
func (c config) validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	if c.IdleRSS {
		check(c.Connect == nil, "--idle-rss starts its own regiond; it does not take --connect")
		check(c.IdleWait > 0, "--idle-wait must be positive")
		return errors.Join(errs...)
	}
	check(c.Regions >= 1 && c.Regions <= len(regionNames), "--regions is %d; it must be 1 to %d", c.Regions, len(regionNames))
	check(c.Groups >= 1 && c.Groups <= maxGroups, "--groups is %d; it must be 1 to %d", c.Groups, maxGroups)
	check(c.GroupSize >= 1 && c.GroupSize <= maxGroupSize, "--group-size is %d; it must be 1 to %d", c.GroupSize, maxGroupSize)
	check(c.Groups*c.GroupSize <= maxUsers, "--groups × --group-size is %d users; at most %d", c.Groups*c.GroupSize, maxUsers)
	check(c.BodyBytes >= minBodyBytes && c.BodyBytes <= maxBodyBytes, "--body-bytes is %d; it must be %d to %d", c.BodyBytes, minBodyBytes, maxBodyBytes)
	check(c.ConnsPerRegion >= 1 && c.ConnsPerRegion <= 64, "--conns is %d; it must be 1 to 64", c.ConnsPerRegion)
	check(c.Rate >= 0 && c.Rate <= 1e6, "--rate is %v; it must be 0 to 1e6", c.Rate)
	check(c.Senders >= 1 && c.Senders <= maxSenders, "--senders is %d; it must be 1 to %d", c.Senders, maxSenders)
	check(c.Warmup >= 0, "--warmup must not be negative")
	check(c.Duration > 0 && c.Duration <= 24*time.Hour, "--duration must be positive and at most 24h")
	check(c.Drain > 0, "--drain must be positive")
	check(c.LinkDelay >= 0 && c.LinkDelay <= 10*time.Second, "--link-delay must be 0 to 10s")
	check(!c.TransportFloor || c.Connect == nil, "--transport-floor runs its own servers; it takes no --connect")
	check(c.LinkDelay == 0 || c.Connect == nil, "--link-delay works on in-process regions; it cannot reach the links of --connect regions")
	check(c.LinkDelay == 0 || c.Regions > 1, "--link-delay needs at least 2 regions")
	check(!c.PlaintextLinks || c.Connect == nil, "--plaintext-links is for in-process regions; --connect regions use what they were started with")
	return errors.Join(errs...)
}
