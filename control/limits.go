package control

import (
	"bytes"
	"fmt"
	"net/http"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"
)

// Limits bound what requests may cost taasd, so that a flood of hostile
// ones cannot exhaust its memory (issue 9: 32 concurrent 4 MB bulk bodies
// took it to 3 GB). The worst case is about MaxConnections × MaxBodySize
// for bodies being read, plus MaxDecodes × (what MaxJSONValues values cost
// decoded, about 250 bytes each) for bodies being handled.
type Limits struct {
	// MaxBodySize is the largest request body in bytes; a larger one gets
	// 413 HTTPRequestEntityTooLarge before it is read. Default 1 MiB (above
	// oslo.middleware's max_request_body_size of 112 KiB, so that bulk
	// creates of a few thousand resources fit).
	MaxBodySize int
	// MaxBulkItems is the most resources one bulk create may list;
	// default 1000.
	MaxBulkItems int
	// MaxJSONDepth is the deepest nesting of objects and arrays a body may
	// have; default 32 (Neutron bodies need 3).
	MaxJSONDepth int
	// MaxJSONValues is the most JSON values (objects, arrays, strings,
	// numbers, literals) a body may hold; default 20000. It bounds the
	// memory a body costs once decoded, whatever its shape.
	MaxJSONValues int
	// MaxDecodes is how many requests with a body are handled at once;
	// default 4. Others wait up to DecodeWait for their turn, then get 503
	// HTTPServiceUnavailable with Retry-After.
	MaxDecodes int
	// DecodeWait is how long a request with a body waits for its turn;
	// default 2s.
	DecodeWait time.Duration
	// MaxConnections is how many connections are served at once. Default
	// 128. Each holds up to MaxBodySize while its body is read. When all
	// are taken, the idlest idle connection is closed to make room; only
	// when none is idle does a new one wait in the listen backlog
	// (connlimit.go).
	MaxConnections int
	// MaxConnectionsPerIP is how many of them one client address (an IPv6
	// client's /64) may hold; default MaxConnections/4 (32), at most
	// MaxConnections. Beyond it, that address's idlest idle connection is
	// closed to make room, or the new one is closed at once.
	MaxConnectionsPerIP int
	// HeaderTimeout is how long a connection may take to send a request's
	// line and headers, from its first byte (from its accept for the first
	// request); default 10s. The body then has bodyTimeout.
	HeaderTimeout time.Duration
	// WriteTimeout is how long writing one response may take; default 60s.
	// A client that stops reading (pipelined requests whose answers it
	// never takes) would otherwise hold its slot for good; an events
	// stream moves its deadline on at every event and heartbeat.
	WriteTimeout time.Duration
}

// Defaults of Limits.
const (
	DefaultMaxBodySize    = 1 << 20
	DefaultMaxBulkItems   = 1000
	DefaultMaxJSONDepth   = 32
	DefaultMaxJSONValues  = 20000
	DefaultMaxDecodes     = 4
	DefaultDecodeWait     = 2 * time.Second
	DefaultMaxConnections = 128
	DefaultHeaderTimeout  = 10 * time.Second
	DefaultWriteTimeout   = 60 * time.Second
)

// bodyTimeout is how long a request's body may take to arrive once its
// headers have.
const bodyTimeout = 30 * time.Second

// maxHeaderSize bounds the request line and headers together: a larger
// request gets 431. Neutron's max_header_line is 16 KiB; keystone's Fernet
// tokens are about 200 bytes.
const maxHeaderSize = 16 << 10

// validate checks l and fills in defaults.
func (l *Limits) validate() error {
	for _, f := range []struct {
		name string
		v    *int
		def  int
	}{
		{"max body size", &l.MaxBodySize, DefaultMaxBodySize},
		{"max bulk items", &l.MaxBulkItems, DefaultMaxBulkItems},
		{"max json depth", &l.MaxJSONDepth, DefaultMaxJSONDepth},
		{"max json values", &l.MaxJSONValues, DefaultMaxJSONValues},
		{"max decodes", &l.MaxDecodes, DefaultMaxDecodes},
		{"max connections", &l.MaxConnections, DefaultMaxConnections},
	} {
		if *f.v < 0 {
			return fmt.Errorf("control: %s %d: want 0 (default) or more", f.name, *f.v)
		}
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	if l.MaxJSONDepth > maxJSONDepth {
		return fmt.Errorf("control: max json depth %d: want at most %d", l.MaxJSONDepth, maxJSONDepth)
	}
	if l.DecodeWait < 0 {
		return fmt.Errorf("control: decode wait %v: want 0 (default) or more", l.DecodeWait)
	}
	if l.DecodeWait == 0 {
		l.DecodeWait = DefaultDecodeWait
	}
	switch {
	case l.MaxConnectionsPerIP < 0:
		return fmt.Errorf("control: max connections per ip %d: want 0 (default) or more", l.MaxConnectionsPerIP)
	case l.MaxConnectionsPerIP > l.MaxConnections:
		return fmt.Errorf("control: max connections per ip %d: want at most max connections (%d)",
			l.MaxConnectionsPerIP, l.MaxConnections)
	case l.MaxConnectionsPerIP == 0:
		l.MaxConnectionsPerIP = max(l.MaxConnections/4, 1)
	}
	if l.HeaderTimeout < 0 {
		return fmt.Errorf("control: header timeout %v: want 0 (default) or more", l.HeaderTimeout)
	}
	if l.HeaderTimeout == 0 {
		l.HeaderTimeout = DefaultHeaderTimeout
	}
	if l.WriteTimeout < 0 {
		return fmt.Errorf("control: write timeout %v: want 0 (default) or more", l.WriteTimeout)
	}
	if l.WriteTimeout == 0 {
		l.WriteTimeout = DefaultWriteTimeout
	}
	return nil
}

// releaseAfter is how long the server must have handled no large body
// before it hands the memory of the last ones back to the kernel.
const releaseAfter = time.Second

// largeBody is the size from which a body arms the release of memory.
const largeBody = 64 << 10

// bodyLimits is the middleware that bounds what a request body costs: its
// shape (depth, values, bulk items) is checked by a scan that allocates
// nothing, before anything decodes it, and at most MaxDecodes requests
// with a body are handled at once. Bodies themselves are bounded by
// fasthttp (MaxBodySize) before any handler runs.
func (s *Server) bodyLimits(c *fiber.Ctx) error {
	// fasthttp's own buffer: c.Body would copy it (Immutable), and guard
	// has refused compressed bodies, so it is what handlers decode.
	body := c.Request().Body()
	if len(body) == 0 {
		return c.Next()
	}
	if len(body) >= largeBody {
		// Rejected or not, reading it cost memory.
		defer s.release.Reset(releaseAfter)
	}
	if err := checkJSONShape(body, s.cfg.Limits); err != nil {
		return err
	}
	select {
	case s.decodes <- struct{}{}:
	default:
		t := time.NewTimer(s.cfg.Limits.DecodeWait)
		select {
		case s.decodes <- struct{}{}:
			t.Stop()
		case <-t.C:
			c.Set(fiber.HeaderRetryAfter, "1")
			return errBusy
		case <-s.done:
			t.Stop()
			return errBusy
		}
	}
	defer func() { <-s.decodes }()
	return c.Next()
}

var errBusy = &neutronError{Status: http.StatusServiceUnavailable, Type: "HTTPServiceUnavailable",
	Message: "The server is currently unavailable. Please try again at a later time."}

// releaseMemory returns the heap that large bodies left behind to the
// kernel, once none has been handled for releaseAfter. Without it, an idle
// taasd would keep a flood's garbage until the runtime's forced GC (two
// minutes) and its pages longer: the two GCs also empty the sync.Pools of
// fasthttp's body buffers.
func (s *Server) releaseMemory() {
	if len(s.decodes) > 0 {
		s.release.Reset(releaseAfter)
		return
	}
	runtime.GC()
	debug.FreeOSMemory()
}

// maxJSONDepth caps Limits.MaxJSONDepth: checkJSONShape keeps the kind
// of each open container in a fixed bit stack of this many levels.
const maxJSONDepth = 512

// checkJSONShape scans b as JSON text, without decoding or allocating, and
// rejects it when it nests deeper than l.MaxJSONDepth, holds more than
// l.MaxJSONValues values, or lists more than l.MaxBulkItems elements in an
// array member of the top-level object (a bulk create). Syntax is not its
// business: whatever it lets through, decodeJSON still parses. For valid
// JSON its counts are exact; a duplicate key's value counts each time, as
// it costs decoding even when a later one wins.
func checkJSONShape(b []byte, l Limits) error {
	var (
		depth   int
		objects [maxJSONDepth / 64]uint64 // bit d: the container at depth d is an object
		values  int
		items   int  // elements of the current bulk array
		bulk    bool // the container open at depth 2 is a bulk array
		inStr   bool
		esc     bool
		inLit   bool // inside a number, true, false or null
		wantKey bool // the next string is an object's key
	)
	isObject := func(d int) bool { return objects[d/64]&(1<<(d%64)) != 0 }
	value := func() error {
		values++
		if values > l.MaxJSONValues {
			return badRequest("Body contains more than %d JSON values", l.MaxJSONValues)
		}
		if bulk && depth == 2 {
			items++
			if items > l.MaxBulkItems {
				return badRequest("Bulk request lists more than %d resources", l.MaxBulkItems)
			}
		}
		return nil
	}
	for _, ch := range b {
		if inStr {
			switch {
			case esc:
				esc = false
			case ch == '\\':
				esc = true
			case ch == '"':
				inStr = false
			}
			continue
		}
		switch ch {
		case ' ', '\t', '\n', '\r', ':', ',', '{', '[', '}', ']', '"':
			inLit = false
		default:
			if !inLit {
				inLit = true
				if err := value(); err != nil {
					return err
				}
			}
			continue
		}
		switch ch {
		case '"':
			inStr = true
			if wantKey {
				wantKey = false
			} else if err := value(); err != nil {
				return err
			}
		case ':':
			wantKey = false
		case ',':
			wantKey = depth > 0 && isObject(depth-1)
		case '{', '[':
			if err := value(); err != nil {
				return err
			}
			if depth >= l.MaxJSONDepth {
				return badRequest("Body nests JSON deeper than %d levels", l.MaxJSONDepth)
			}
			if ch == '{' {
				objects[depth/64] |= 1 << (depth % 64)
			} else {
				objects[depth/64] &^= 1 << (depth % 64)
			}
			depth++
			wantKey = ch == '{'
			if depth == 2 {
				bulk = ch == '[' && isObject(0)
				items = 0
			}
		case '}', ']':
			if depth > 0 {
				depth--
			}
			wantKey = false
		}
	}
	return nil
}

// guard screens what fasthttp parsed before fiber sees it, for what fiber
// would answer without a NeutronError or not notice: a method fiber does
// not know (it answers 400 text/plain); requests whose framing a proxy in
// front may read differently than fasthttp does (request smuggling): two
// different Content-Length headers (fasthttp keeps the last), or
// Transfer-Encoding with Content-Length (fasthttp lets chunked win), which
// get 400, or a Transfer-Encoding other than one "chunked" (fasthttp reads
// any as chunked), which gets 501, each with the connection closed, since
// where their body ends is in doubt; and compressed bodies, which fiber's Ctx.Body would inflate
// without a bound (a 1 MiB gzip body inflates to 1 GiB), so 415 as
// upstream's webob does not decode them either.
func (s *Server) guard(next fasthttp.RequestHandler) fasthttp.RequestHandler {
	known := map[string]bool{}
	for _, m := range fiber.DefaultMethods {
		known[m] = true
	}
	return func(fc *fasthttp.RequestCtx) {
		ferr := checkFraming(&fc.Request.Header)
		var err error
		switch {
		case !known[string(fc.Method())]:
			err = errMethodNotAllowed
		case ferr != nil:
			err = ferr
			fc.SetConnectionClose()
		case !plainEncoding(&fc.Request.Header):
			err = errContentEncoding
		}
		if err == nil {
			next(fc)
			return
		}
		c := s.app.AcquireCtx(fc)
		defer s.app.ReleaseCtx(c)
		if herr := s.app.ErrorHandler(c, err); herr != nil {
			s.log.Error("render error", "err", herr)
		}
	}
}

// checkFraming rejects conflicting Content-Length headers,
// Transfer-Encoding together with Content-Length (RFC 9112 6.3: a server
// ought to handle that as an error and close the connection), and any
// Transfer-Encoding but one "chunked" (501, as RFC 9112 6.1 asks of a
// coding the server does not understand).
func checkFraming(h *fasthttp.RequestHeader) error {
	var (
		cl       []byte
		conflict bool
		te       int  // Transfer-Encoding headers
		chunked  bool // the only one says chunked
	)
	h.VisitAllInOrder(func(k, v []byte) {
		switch {
		case bytes.EqualFold(k, []byte(fiber.HeaderContentLength)):
			v = bytes.TrimSpace(v)
			conflict = conflict || cl != nil && !bytes.Equal(cl, v)
			cl = append(cl[:0], v...)
		case bytes.EqualFold(k, []byte(fiber.HeaderTransferEncoding)):
			te++
			chunked = bytes.EqualFold(bytes.TrimSpace(v), []byte("chunked"))
		}
	})
	switch {
	case conflict:
		return badRequest("Request has conflicting Content-Length headers")
	case te > 0 && cl != nil:
		return badRequest("Request has both Transfer-Encoding and Content-Length")
	case te > 1 || te == 1 && !chunked:
		// fasthttp reads any Transfer-Encoding as chunked alone; a proxy
		// in front may apply the other codings it names (RFC 9112 6.1).
		return errTransferEncoding
	}
	return nil
}

var errTransferEncoding = &neutronError{Status: http.StatusNotImplemented, Type: "HTTPNotImplemented",
	Message: "Request has a Transfer-Encoding other than chunked."}

var errContentEncoding = &neutronError{Status: http.StatusUnsupportedMediaType, Type: "HTTPUnsupportedMediaType",
	Message: "Request bodies must not be compressed (Content-Encoding)."}

// plainEncoding reports whether every Content-Encoding header of h leaves
// the body as it is. Each one counts: fasthttp's ContentEncoding answers
// the first, while fiber's Ctx.Body inflates by the last, so checking one
// let "identity" then "gzip" through to an unbounded inflate.
func plainEncoding(h *fasthttp.RequestHeader) bool {
	plain := true
	h.VisitAll(func(k, v []byte) {
		if !bytes.EqualFold(k, []byte(fiber.HeaderContentEncoding)) {
			return
		}
		v = bytes.TrimSpace(v)
		plain = plain && (len(v) == 0 || bytes.EqualFold(v, []byte("identity")))
	})
	return plain
}
