package ops

import (
	"bytes"
	"context"
	"crypto/subtle"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Config is what an ops listener serves.
type Config struct {
	// Addr is where it listens: host:port, loopback or a private network.
	Addr string
	// Region is this region; Federation names the federation (optional).
	Region     string
	Federation string
	// Regions lists every region of the federation in file order, this
	// one included; empty for a region on its own.
	Regions []string
	// PeerAddrs maps the other regions to their ops listeners
	// (metrics_addr in the federation file).
	PeerAddrs map[string]string
	Metrics   *Metrics
	// Ready reports why the region does not serve now; nil when it does.
	Ready func() error
	// Drill cuts (cut true) or restores the link a-b, one end of which is
	// this region. A gRPC status in the error picks the HTTP code.
	Drill func(ctx context.Context, cut bool, a, b, reason string) error
	// Token is the admin token that drills need; empty turns drills off.
	Token  string
	Logger *slog.Logger

	// EventEvery is the /events interval; 0 means 500ms.
	EventEvery time.Duration
	// PeerTimeout bounds one call to another region; 0 means 400ms.
	PeerTimeout time.Duration
}

// Server is a running ops listener.
type Server struct {
	cfg    Config
	log    *slog.Logger
	lis    net.Listener
	http   *http.Server
	client *http.Client
	served chan struct{}

	viewMu   sync.Mutex
	lastView View
	viewAt   time.Time

	// streams bounds the open /events streams.
	streams chan struct{}

	closing chan struct{}
	once    sync.Once
	err     error
}

//go:embed status.html
var statusPage []byte

// maxStreams bounds the open /events streams.
const maxStreams = 64

// Start listens on cfg.Addr and serves until Shutdown.
func Start(cfg Config) (*Server, error) {
	if cfg.Metrics == nil {
		return nil, errors.New("ops: Config.Metrics is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Ready == nil {
		cfg.Ready = func() error { return nil }
	}
	if cfg.EventEvery <= 0 {
		cfg.EventEvery = 500 * time.Millisecond
	}
	if cfg.PeerTimeout <= 0 {
		cfg.PeerTimeout = 400 * time.Millisecond
	}
	lis, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen metrics %s: %w", cfg.Addr, err)
	}
	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger,
		lis:     lis,
		served:  make(chan struct{}),
		closing: make(chan struct{}),
		streams: make(chan struct{}, maxStreams),
		client: &http.Client{Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: cfg.PeerTimeout}).DialContext,
			MaxIdleConnsPerHost: 2,
			IdleConnTimeout:     30 * time.Second,
		}},
	}
	s.http = &http.Server{
		Handler:           s.routes(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		// No WriteTimeout: /events and pprof's profiles write for long;
		// /events sets its own deadline per event.
		IdleTimeout: 60 * time.Second,
		ErrorLog:    slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	go func() {
		defer close(s.served)
		if err := s.http.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("metrics listener failed", slog.Any("err", err))
		}
	}()
	s.log.Info("metrics, health and status page serving", slog.String("addr", lis.Addr().String()))
	return s, nil
}

// Addr is the listener's address.
func (s *Server) Addr() string { return s.lis.Addr().String() }

// Shutdown ends the event streams, stops taking requests and waits for
// those in flight until ctx ends, then closes what is left. It is
// idempotent.
func (s *Server) Shutdown(ctx context.Context) error {
	s.once.Do(func() {
		close(s.closing)
		if err := s.http.Shutdown(ctx); err != nil {
			s.err = errors.Join(err, s.http.Close())
		}
		<-s.served
		s.client.CloseIdleConnections()
	})
	return s.err
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.page)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := s.ready(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready:", err)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.cfg.Metrics.Registry(), promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
	}))
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /api/status", s.apiStatus)
	mux.HandleFunc("GET /events", s.events)
	mux.HandleFunc("POST /api/drill", s.apiDrill)
	return mux
}

// ready says why the region does not serve, or nil; it also fails once
// Shutdown has begun.
func (s *Server) ready() error {
	select {
	case <-s.closing:
		return errors.New("shutting down")
	default:
	}
	return s.cfg.Ready()
}

func (s *Server) page(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	// Everything is inline; the page talks only to this listener.
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "+
		"connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	_, _ = w.Write(statusPage)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) apiStatus(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Query().Get("scope") {
	case "region":
		writeJSON(w, http.StatusOK, s.localStatus())
	case "", "federation":
		writeJSON(w, http.StatusOK, s.view(r.Context()))
	default:
		writeJSON(w, http.StatusBadRequest, apiError{"scope is region or federation"})
	}
}

// events streams a View every EventEvery until the client goes or the
// server shuts down.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	select {
	case s.streams <- struct{}{}:
		defer func() { <-s.streams }()
	default:
		http.Error(w, "too many event streams open; poll /api/status", http.StatusServiceUnavailable)
		return
	}
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	t := time.NewTicker(s.cfg.EventEvery)
	defer t.Stop()
	ctx := r.Context()
	for {
		b, err := json.Marshal(s.view(ctx))
		if err != nil {
			s.log.Warn("status event unencodable", slog.Any("err", err))
			return
		}
		_ = rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-s.closing:
			return
		case <-t.C:
		}
	}
}

type apiError struct {
	Error string `json:"error"`
}

// DrillRequest is the body of POST /api/drill.
type DrillRequest struct {
	Action string `json:"action"` // cut or restore
	A      string `json:"a"`
	B      string `json:"b"`
	Reason string `json:"reason,omitempty"`
}

// forwardedHeader marks a drill passed on by another region's ops
// listener, which must not be passed on again.
const forwardedHeader = "X-Roamfed-Forwarded-By"

func (s *Server) apiDrill(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Token == "" || s.cfg.Drill == nil {
		writeJSON(w, http.StatusForbidden, apiError{"drills are off: this region runs without an admin token"})
		return
	}
	auth := r.Header.Get("Authorization")
	got, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(s.cfg.Token)) != 1 {
		w.Header().Set("WWW-Authenticate", `Bearer realm="roamfed admin"`)
		writeJSON(w, http.StatusUnauthorized, apiError{"send Authorization: Bearer <admin token> (the admin API's token)"})
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 4<<10))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{"body: " + err.Error()})
		return
	}
	var req DrillRequest
	if err := json.Unmarshal(body, &req); err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{"body is not a drill: " + err.Error()})
		return
	}
	if req.Action != "cut" && req.Action != "restore" {
		writeJSON(w, http.StatusBadRequest, apiError{`action is "cut" or "restore"`})
		return
	}
	if req.A == "" || req.B == "" || req.A == req.B {
		writeJSON(w, http.StatusBadRequest, apiError{"a and b must name the two ends of a link"})
		return
	}
	if len(s.cfg.Regions) > 0 && (!slices.Contains(s.cfg.Regions, req.A) || !slices.Contains(s.cfg.Regions, req.B)) {
		writeJSON(w, http.StatusBadRequest, apiError{fmt.Sprintf("%s-%s is not a link of this federation", req.A, req.B)})
		return
	}
	if req.Reason == "" {
		req.Reason = "status page"
	}
	from := r.Header.Get(forwardedHeader)
	log := s.log.With(slog.String("action", req.Action), slog.String("a", req.A), slog.String("b", req.B),
		slog.String("reason", req.Reason), slog.String("remote", r.RemoteAddr))
	if from != "" {
		log = log.With(slog.String("forwarded_by", from))
	}
	if req.A != s.cfg.Region && req.B != s.cfg.Region {
		if from != "" {
			writeJSON(w, http.StatusBadRequest, apiError{fmt.Sprintf("%s was asked a drill on %s-%s twice removed", s.cfg.Region, req.A, req.B)})
			return
		}
		log.Info("drill: passing to an end of the link")
		s.forwardDrill(w, r.Context(), auth, req)
		return
	}
	log.Info("drill requested over HTTP")
	if err := s.cfg.Drill(r.Context(), req.Action == "cut", req.A, req.B, req.Reason); err != nil {
		log.Warn("drill failed", slog.Any("err", err))
		writeJSON(w, httpCode(err), apiError{status.Convert(err).Message()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"result": fmt.Sprintf("%s %s-%s done at %s", req.Action, req.A, req.B, s.cfg.Region)})
}

// forwardDrill passes a drill to the ops listener of one of the link's
// ends, the first that answers, and copies its answer.
func (s *Server) forwardDrill(w http.ResponseWriter, ctx context.Context, auth string, req DrillRequest) {
	body, _ := json.Marshal(req)
	var errs []string
	for _, end := range []string{req.A, req.B} {
		addr := s.cfg.PeerAddrs[end]
		if addr == "" {
			errs = append(errs, end+": no metrics_addr in the federation file")
			continue
		}
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		hr, err := http.NewRequestWithContext(fctx, http.MethodPost, "http://"+addr+"/api/drill", bytes.NewReader(body))
		if err != nil {
			cancel()
			errs = append(errs, end+": "+err.Error())
			continue
		}
		hr.Header.Set("Content-Type", "application/json")
		hr.Header.Set("Authorization", auth)
		hr.Header.Set(forwardedHeader, s.cfg.Region)
		resp, err := s.client.Do(hr)
		if err != nil {
			cancel()
			errs = append(errs, end+": "+err.Error())
			continue
		}
		out, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		cancel()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write(out)
		return
	}
	writeJSON(w, http.StatusBadGateway, apiError{"no end of the link answered: " + strings.Join(errs, "; ")})
}

// httpCode maps a drill's error to an HTTP status.
func httpCode(err error) int {
	switch status.Code(err) {
	case codes.InvalidArgument:
		return http.StatusBadRequest
	case codes.NotFound:
		return http.StatusNotFound
	case codes.FailedPrecondition:
		return http.StatusConflict
	case codes.Unavailable, codes.DeadlineExceeded:
		return http.StatusServiceUnavailable
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.PermissionDenied:
		return http.StatusForbidden
	}
	return http.StatusInternalServerError
}
