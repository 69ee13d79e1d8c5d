package control

import (
	"bytes"
	"errors"
	"io"
	"sync"
)

// Terminal is the guest's console as the hub drives it: input is written
// to it, and it takes the attached client's window size.
type Terminal interface {
	io.Writer
	SetSize(rows, cols uint16) error
}

// Sizes of the hub's buffers.
const (
	// ReplaySize is how much recent output a new session is shown first.
	ReplaySize = 64 << 10
	// maxPending is how much output may wait for a slow client: beyond it
	// the client is dropped, so that it never holds the console up.
	maxPending = 1 << 20
)

// Reasons a session ends, as the client shows them.
const (
	reasonTakenOver = "another umlctl console took this console over (--force); the guest keeps running"
	reasonTooSlow   = "this console fell too far behind the guest's output and was detached; attach again"
)

// Hub fans a guest's console output out to a replay buffer and to at most
// one attached session, and passes that session's input and window size to
// the console. Output never waits for a session: the supervisor's console
// reader (which also logs to the journal) must keep going whatever a client
// does.
type Hub struct {
	term Terminal

	mu sync.Mutex
	// ring holds the last ReplaySize bytes of output: n bytes from
	// start, wrapping around its end.
	ring     []byte
	start, n int
	wrapped  bool // output was dropped from the ring's start
	current  *Session
	ended    string // why the console ended; "" while it runs
	inputMu  sync.Mutex
}

// NewHub makes the hub of the console term.
func NewHub(term Terminal) *Hub {
	return &Hub{term: term}
}

// Write takes console output: it never blocks and never fails.
func (h *Hub) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.record(p)
	if s := h.current; s != nil {
		if !s.push(p) {
			s.end(reasonTooSlow)
			h.current = nil
		}
	}
	return len(p), nil
}

// record keeps p in the ring, dropping the oldest output beyond
// ReplaySize.
func (h *Hub) record(p []byte) {
	if len(p) == 0 {
		return
	}
	if h.ring == nil {
		h.ring = make([]byte, ReplaySize)
	}
	if over := h.n + len(p) - ReplaySize; over > 0 {
		h.wrapped = true
		if len(p) >= ReplaySize {
			copy(h.ring, p[len(p)-ReplaySize:])
			h.start, h.n = 0, ReplaySize
			return
		}
		h.start = (h.start + over) % ReplaySize
		h.n -= over
	}
	end := (h.start + h.n) % ReplaySize
	k := copy(h.ring[end:], p)
	copy(h.ring, p[k:])
	h.n += len(p)
}

// Close ends the console, and the attached session with reason.
func (h *Hub) Close(reason string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ended != "" {
		return
	}
	h.ended = reason
	if h.current != nil {
		h.current.end(reason)
		h.current = nil
	}
}

// Attached reports whether a session is attached.
func (h *Hub) Attached() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.current != nil
}

// Attach starts a session: its output starts with the recent output, from
// a line boundary, then follows the console. With a session attached it
// fails with ErrBusy, unless force, which ends that session and tells it.
// After Close it fails with ErrNotRunning.
func (h *Hub) Attach(force bool) (*Session, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ended != "" {
		return nil, ErrNotRunning
	}
	if h.current != nil {
		if !force {
			return nil, ErrBusy
		}
		h.current.end(reasonTakenOver)
	}
	s := &Session{hub: h, wake: make(chan struct{}, 1), done: make(chan struct{})}
	s.pending = h.replay()
	if len(s.pending) > 0 {
		s.wake <- struct{}{}
	}
	h.current = s
	return s, nil
}

// replay is the ring's content from its first line boundary: a replay
// that starts in the middle of a line (or of a UTF-8 sequence, or of an
// escape sequence) would garble the terminal.
func (h *Hub) replay() []byte {
	b := make([]byte, h.n)
	k := copy(b, h.ring[h.start:min(h.start+h.n, len(h.ring))])
	copy(b[k:], h.ring)
	if h.wrapped {
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return b
}

// errDetached: the session is no longer the attached one.
var errDetached = errors.New("the session is no longer attached")

// input writes p to the console for session s.
func (h *Hub) input(s *Session, p []byte) error {
	if !h.isCurrent(s) {
		return errDetached
	}
	// One writer at a time, so that a session taken over while its input
	// waits for the guest cannot interleave with the next one's.
	h.inputMu.Lock()
	defer h.inputMu.Unlock()
	_, err := h.term.Write(p)
	return err
}

func (h *Hub) resize(s *Session, rows, cols uint16) error {
	if !h.isCurrent(s) {
		return errDetached
	}
	return h.term.SetSize(rows, cols)
}

func (h *Hub) isCurrent(s *Session) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.current == s
}

func (h *Hub) detach(s *Session) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.current == s {
		h.current = nil
	}
	s.end("")
}

// Session is one client attached to the console.
type Session struct {
	hub  *Hub
	wake chan struct{} // signalled when pending grows
	done chan struct{} // closed when the session ends

	mu      sync.Mutex
	pending []byte
	reason  string
	ended   bool
}

// push queues output; false if the session has too much queued.
func (s *Session) push(p []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return true
	}
	if len(s.pending)+len(p) > maxPending {
		return false
	}
	s.pending = append(s.pending, p...)
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return true
}

// end ends the session with reason, once.
func (s *Session) end(reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return
	}
	s.ended, s.reason = true, reason
	close(s.done)
}

// Wake receives when there is output to take.
func (s *Session) Wake() <-chan struct{} { return s.wake }

// Done is closed when the session has ended; Take still returns what was
// queued before, and Reason says why.
func (s *Session) Done() <-chan struct{} { return s.done }

// Take returns the queued output and empties the queue.
func (s *Session) Take() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pending
	s.pending = nil
	return p
}

// Reason says why the session ended: "" when it was detached.
func (s *Session) Reason() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reason
}

// Input writes p to the guest's console.
func (s *Session) Input(p []byte) error { return s.hub.input(s, p) }

// Resize sets the console's window size.
func (s *Session) Resize(rows, cols uint16) error { return s.hub.resize(s, rows, cols) }

// Detach ends the session from the client's side.
func (s *Session) Detach() { s.hub.detach(s) }
