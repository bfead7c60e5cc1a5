package control

import (
	"bufio"
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"
)

// Event is one change, as GET /v2.0/taas/events streams it.
type Event struct {
	// Resource is "port", "network", "tap_service", "tap_flow" or
	// "tap_mirror".
	Resource string `json:"resource"`
	ID       string `json:"id"`
	// Action is "create", "update", "delete" or "status" (the reconciler
	// wrote a new status; for a tap mirror, which has no stored status,
	// found one).
	Action string `json:"action"`
	// Status is the new status, for "status" events.
	Status    string `json:"status,omitempty"`
	ProjectID string `json:"-"`
}

// hub fans events out to subscribers. Publishing never blocks: a
// subscriber whose buffer is full misses the event (and the drop is
// counted), so a slow dashboard can never stall the reconciler or a
// request.
type hub struct {
	dropped atomic.Uint64

	mu     sync.Mutex
	subs   map[*subscriber]struct{}
	closed bool
}

type subscriber struct {
	ch chan Event
	// project limits the events to one project; "" is every project.
	project string
}

func newHub() *hub { return &hub{subs: map[*subscriber]struct{}{}} }

func (h *hub) publish(evs ...Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, e := range evs {
		for s := range h.subs {
			if s.project != "" && s.project != e.ProjectID {
				continue
			}
			select {
			case s.ch <- e:
			default:
				h.dropped.Add(1)
			}
		}
	}
}

// subscribe returns a subscriber, or nil once the hub is closed.
func (h *hub) subscribe(project string) *subscriber {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil
	}
	s := &subscriber{ch: make(chan Event, 64), project: project}
	h.subs[s] = struct{}{}
	return s
}

func (h *hub) unsubscribe(s *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[s]; ok {
		delete(h.subs, s)
		close(s.ch)
	}
}

// close ends every stream, so that shutdown does not wait on them.
func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for s := range h.subs {
		delete(h.subs, s)
		close(s.ch)
	}
}

// events streams the caller's events as server-sent events: one "data:"
// line of JSON per event, and a comment line every heartbeat so proxies
// and clients see the stream alive. The stream ends when the client goes
// away (a write fails), the server shuts down, or SetTokens removes or
// changes the caller's token (checked before every event and heartbeat: a
// revoked member's open stream kept its project's events, issue 9).
func (s *Server) events(c *fiber.Ctx) error {
	id := identity(c)
	valid := s.stillValid(c, id)
	sub := s.hub.subscribe(id.scope())
	if sub == nil {
		return &neutronError{Status: fiber.StatusServiceUnavailable, Type: "ServiceUnavailable",
			Message: "The server is shutting down."}
	}
	if !id.member() {
		// A caller that may see no tap resource gets a stream with no events.
		s.hub.unsubscribe(sub)
		sub = &subscriber{ch: make(chan Event)}
	}
	c.Set(fiber.HeaderContentType, "text/event-stream")
	c.Set(fiber.HeaderCacheControl, "no-cache")
	c.Set("X-Accel-Buffering", "no")
	heartbeat := s.cfg.Heartbeat
	// The server's write deadline covers one response; a stream moves it
	// on before each flush, so it lasts while its reader reads. A reader
	// that stops is cut off once the deadline passes.
	conn, writeTimeout := c.Context().Conn(), s.cfg.Limits.WriteTimeout
	flush := func(w *bufio.Writer) error {
		if err := conn.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
			return err
		}
		return w.Flush()
	}
	c.Context().SetBodyStreamWriter(func(w *bufio.Writer) {
		defer s.hub.unsubscribe(sub)
		tick := time.NewTicker(heartbeat)
		defer tick.Stop()
		if _, err := w.WriteString(": taasd events\n\n"); err != nil || flush(w) != nil {
			return
		}
		for {
			select {
			case e, ok := <-sub.ch:
				if !ok || !valid() {
					return
				}
				b, err := json.Marshal(e)
				if err != nil {
					return
				}
				w.WriteString("data: ") //nolint:errcheck // Flush reports write errors
				w.Write(b)              //nolint:errcheck
				w.WriteString("\n\n")   //nolint:errcheck
			case <-tick.C:
				if !valid() {
					return
				}
				w.WriteString(": heartbeat\n\n") //nolint:errcheck // Flush reports write errors
			case <-s.done:
				return
			}
			if err := flush(w); err != nil {
				return
			}
		}
	})
	return nil
}
