package control

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"umlsd/mconsole"
)

// fakeHandler answers as a supervisor would.
type fakeHandler struct {
	status   Status
	hub      *Hub
	mu       sync.Mutex
	commands []string
}

func (f *fakeHandler) Status(context.Context) (Status, error) { return f.status, nil }

func (f *fakeHandler) Mconsole(ctx context.Context, cmd string) (string, error) {
	f.mu.Lock()
	f.commands = append(f.commands, cmd)
	f.mu.Unlock()
	switch cmd {
	case "version":
		return "Linux umlsd-test 6.1.0", nil
	case "bogus":
		return "", &mconsole.CommandError{Command: cmd, Code: 1, Message: "Unknown command"}
	case "hang":
		<-ctx.Done()
		return "", ctx.Err()
	case "gone":
		return "", ErrNotRunning
	}
	return "", errors.New("the kernel's management console: something broke")
}

func (f *fakeHandler) Console() (*Hub, error) {
	if f.hub == nil {
		return nil, ErrNotRunning
	}
	return f.hub, nil
}

// serve runs a server for guest "g" under a temporary runtime directory
// and returns that directory.
func serve(t *testing.T, s *Server) string {
	t.Helper()
	if s.UID == 0 {
		s.UID = os.Getuid()
	}
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "g"), 0o700); err != nil {
		t.Fatal(err)
	}
	l, err := Listen(SocketPath(dir, "g"))
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(SocketPath(dir, "g"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("control socket mode %v, want 0600", fi.Mode().Perm())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return 5 s after its context ended")
		}
	})
	return dir
}

func dial(t *testing.T, dir string) *Client {
	t.Helper()
	c, err := Dial(t.Context(), dir, "g")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestStatusAndMconsole(t *testing.T) {
	started := time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC)
	want := Status{KernelPID: 42, Started: started, Ready: true, Boots: 2, Frozen: true}
	h := &fakeHandler{status: want}
	c := dial(t, serve(t, &Server{Handler: h, UID: os.Getuid()}))
	got, err := c.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("status (-want +got):\n%s", diff)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	var ce *mconsole.CommandError
	for _, tt := range []struct {
		command, reply string
		check          func(error) bool
	}{
		{"version", "Linux umlsd-test 6.1.0", func(err error) bool { return err == nil }},
		{"bogus", "", func(err error) bool {
			return errors.As(err, &ce) && *ce == mconsole.CommandError{Command: "bogus", Code: 1, Message: "Unknown command"}
		}},
		{"hang", "", func(err error) bool { return errors.Is(err, ErrTimeout) }},
		{"gone", "", func(err error) bool { return errors.Is(err, ErrNotRunning) }},
		{"broken", "", func(err error) bool {
			var re *RemoteError
			return errors.As(err, &re) && strings.Contains(re.Message, "something broke")
		}},
	} {
		start := time.Now()
		reply, err := c.Mconsole(ctx, tt.command)
		if reply != tt.reply || !tt.check(err) {
			t.Errorf("Mconsole(%q) = %q, %v (%T)", tt.command, reply, err, err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("Mconsole(%q) took %v with a 500 ms timeout", tt.command, d)
		}
	}
}

func TestNotRunning(t *testing.T) {
	dir := t.TempDir()
	if _, err := Dial(t.Context(), dir, "g"); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Dial without a socket: %v, want ErrNotRunning", err)
	}
	// A socket left by a dead supervisor refuses connections.
	os.Mkdir(filepath.Join(dir, "g"), 0o700)
	l, err := Listen(SocketPath(dir, "g"))
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if _, err := Dial(t.Context(), dir, "g"); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Dial to a dead socket: %v, want ErrNotRunning", err)
	}
}

// TestPeerRefused: a client that is not the allowed user gets nothing.
func TestPeerRefused(t *testing.T) {
	h := &fakeHandler{status: Status{KernelPID: 42}}
	c := dial(t, serve(t, &Server{Handler: h, UID: os.Getuid() + 1}))
	if st, err := c.Status(t.Context()); !errors.Is(err, ErrDenied) {
		t.Errorf("Status from another user: %+v, %v; want ErrDenied", st, err)
	}
	if _, err := c.Mconsole(t.Context(), "version"); !errors.Is(err, ErrDenied) {
		t.Errorf("Mconsole from another user: %v; want ErrDenied", err)
	}
	if len(h.commands) != 0 {
		t.Errorf("the handler ran %q for another user", h.commands)
	}
}

// TestStuckClient: a client that connects and says nothing is dropped, and
// does not keep others out.
func TestStuckClient(t *testing.T) {
	dir := serve(t, &Server{Handler: &fakeHandler{}})
	conn, err := net.Dial("unix", SocketPath(dir, "g"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := dial(t, dir)
	if _, err := c.Status(t.Context()); err != nil {
		t.Errorf("Status while another client is stuck: %v", err)
	}
	conn.SetReadDeadline(time.Now().Add(requestTimeout + 3*time.Second))
	start := time.Now()
	if _, err := io.ReadAll(conn); err != nil {
		t.Fatalf("a client that sends nothing: %v after %v, want the server to close the connection", err, time.Since(start))
	}
}

// readUntil reads s until its output holds want.
func readUntil(t *testing.T, s *Stream, want string) string {
	t.Helper()
	var got bytes.Buffer
	buf := make([]byte, 10)
	for !strings.Contains(got.String(), want) {
		n, err := s.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			t.Fatalf("reading the console: %v, after %q; want %q", err, got.String(), want)
		}
	}
	return got.String()
}

func TestAttach(t *testing.T) {
	term := newFakeTerminal()
	hub := NewHub(term)
	h := &fakeHandler{}
	dir := serve(t, &Server{Handler: h})
	c := dial(t, dir)
	if _, err := c.Attach(t.Context(), AttachOptions{}); !errors.Is(err, ErrNotRunning) {
		t.Errorf("attach before the kernel started: %v, want ErrNotRunning", err)
	}
	h.hub = hub
	hub.Write([]byte("earlier\nlogin# "))

	a, err := c.Attach(t.Context(), AttachOptions{Rows: 40, Cols: 132})
	if err != nil {
		t.Fatal(err)
	}
	if got := readUntil(t, a, "login# "); got != "earlier\nlogin# " {
		t.Errorf("replay %q", got)
	}
	hub.Write([]byte("live output\n"))
	readUntil(t, a, "live output\n")
	a.Write([]byte("uname\r"))
	a.Resize(50, 100)
	deadline := time.Now().Add(5 * time.Second)
	for {
		input, sizes := term.got()
		if input == "uname\r" && len(sizes) == 2 {
			if diff := cmp.Diff([][2]uint16{{40, 132}, {50, 100}}, sizes); diff != "" {
				t.Errorf("window sizes (-want +got):\n%s", diff)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("console input %q and sizes %v after 5 s", input, sizes)
		}
		<-term.wrote
	}

	if _, err := c.Attach(t.Context(), AttachOptions{}); !errors.Is(err, ErrBusy) {
		t.Errorf("second attach: %v, want ErrBusy", err)
	}
	b, err := c.Attach(t.Context(), AttachOptions{Force: true})
	if err != nil {
		t.Fatal(err)
	}
	var ended *SessionEnded
	if _, err := io.ReadAll(a); !errors.As(err, &ended) || ended.Reason != reasonTakenOver {
		t.Errorf("the first session ended with %v, want a SessionEnded saying it was taken over", err)
	}
	readUntil(t, b, "live output\n")
	b.Close()
	// Detached: another attach works.
	deadline = time.Now().Add(5 * time.Second)
	for hub.Attached() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	d, err := c.Attach(t.Context(), AttachOptions{})
	if err != nil {
		t.Fatalf("attach after a detach: %v", err)
	}
	hub.Write([]byte("last words\n"))
	hub.Close("the guest's kernel exited")
	got, err := io.ReadAll(d)
	if !errors.As(err, &ended) || ended.Reason != "the guest's kernel exited" {
		t.Errorf("the session ended with %v at the kernel's exit", err)
	}
	if !strings.HasSuffix(string(got), "last words\n") {
		t.Errorf("the output before the end was not all sent: %q", got)
	}
}

// TestClientNotReading: a client that stops reading never holds up the
// console's output, and is detached.
func TestClientNotReading(t *testing.T) {
	hub := NewHub(newFakeTerminal())
	dir := serve(t, &Server{Handler: &fakeHandler{hub: hub}})
	c := dial(t, dir)
	s, err := c.Attach(t.Context(), AttachOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		chunk := bytes.Repeat([]byte("w"), 4096)
		for i := 0; i < 4*maxPending/len(chunk); i++ {
			hub.Write(chunk)
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("writing 4 MiB of console output to a client that does not read took more than 5 s")
	}
	if hub.Attached() {
		t.Error("a client that does not read is still attached after 4 MiB")
	}
}

// failingConn is a connection whose writes fail, as to a client that shut
// its reading side.
type failingConn struct {
	mu     sync.Mutex
	closed bool
}

func (c *failingConn) Write([]byte) (int, error)        { return 0, errors.New("broken pipe") }
func (c *failingConn) SetWriteDeadline(time.Time) error { return nil }
func (c *failingConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	return nil
}

// TestSendOutputCloses: however the output ends, the connection is closed,
// so that the input loop ends and the connection's slot is freed.
func TestSendOutputCloses(t *testing.T) {
	for _, tt := range []struct {
		name string
		end  func(h *Hub, s *Session)
	}{
		// Ended with output queued, which cannot be sent.
		{"ended, failing output", func(h *Hub, s *Session) {
			<-s.Wake() // only Done is ready: the replay waits
			h.Close("the guest's kernel exited")
		}},
		{"ended, failing notice", func(h *Hub, s *Session) {
			<-s.Wake()
			s.Take()
			h.Close("the guest's kernel exited")
		}},
		{"failing output", func(h *Hub, s *Session) {}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := NewHub(newFakeTerminal())
			h.Write([]byte("replay\n"))
			s, err := h.Attach(false)
			if err != nil {
				t.Fatal(err)
			}
			tt.end(h, s)
			conn := &failingConn{}
			done := make(chan struct{})
			go func() { defer close(done); sendOutput(conn, s) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("sendOutput did not return 5 s after its output failed")
			}
			if !conn.closed {
				t.Error("sendOutput returned without closing the connection")
			}
			if h.Attached() {
				t.Error("the session is still attached")
			}
		})
	}
}

// logRecorder records a server's log.
type logRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (l *logRecorder) log(msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, msg)
}

func (l *logRecorder) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := l.msgs
	l.msgs = nil
	return m
}

// TestQuietCheck: a client that connects and closes without a request (as
// Dial does) is no failure, and is not logged; one that breaks off its
// request is.
func TestQuietCheck(t *testing.T) {
	var rec logRecorder
	dir := serve(t, &Server{Handler: &fakeHandler{}, Log: rec.log})
	for _, tt := range []struct {
		name, send string
		want       []string
	}{
		{"nothing", "", nil},
		{"half a request", `{"op":`, []string{"control socket: reading a request: unexpected EOF"}},
		{"a request", `{"op":"status"}` + "\n", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := net.Dial("unix", SocketPath(dir, "g"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := io.WriteString(conn, tt.send); err != nil {
				t.Fatal(err)
			}
			conn.(*net.UnixConn).CloseWrite()
			// The server logs before it closes the connection.
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadAll(conn); err != nil {
				t.Fatalf("waiting for the server to close the connection: %v", err)
			}
			if diff := cmp.Diff(tt.want, rec.take()); diff != "" {
				t.Errorf("logged (-want +got):\n%s", diff)
			}
		})
	}
	if _, err := Dial(t.Context(), dir, "g"); err != nil {
		t.Fatal(err)
	}
}

// TestPeerRefusedFirst: a client that is not the allowed user is refused
// before its request is read, however long that request is.
func TestPeerRefusedFirst(t *testing.T) {
	var rec logRecorder
	dir := serve(t, &Server{Handler: &fakeHandler{}, UID: os.Getuid() + 1, Log: rec.log})
	conn, err := net.Dial("unix", SocketPath(dir, "g"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// More than the server reads of a refused request, and no line end.
	if _, err := conn.Write(bytes.Repeat([]byte("x"), 2*maxRefusedLine)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	conn.SetReadDeadline(time.Now().Add(requestTimeout + 3*time.Second))
	var resp response
	if err := readLine(bufio.NewReader(conn), &resp); err != nil {
		t.Fatalf("reading the refusal: %v", err)
	}
	if d := time.Since(start); d > requestTimeout/2 {
		t.Errorf("the refusal took %v", d)
	}
	if diff := cmp.Diff(&wireError{Kind: kindDenied, Message: ErrDenied.Error()}, resp.Error); diff != "" {
		t.Errorf("refusal (-want +got):\n%s", diff)
	}
}

// flakyListener fails its first accepts as a process out of file
// descriptors does.
type flakyListener struct {
	*net.UnixListener
	mu    sync.Mutex
	fails int
}

func (l *flakyListener) AcceptUnix() (*net.UnixConn, error) {
	l.mu.Lock()
	fail := l.fails > 0
	l.fails--
	l.mu.Unlock()
	if fail {
		return nil, &net.OpError{Op: "accept", Net: "unix", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.UnixListener.AcceptUnix()
}

// TestAcceptRetried: a failure to accept does not end the control socket.
func TestAcceptRetried(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "g"), 0o700)
	l, err := Listen(SocketPath(dir, "g"))
	if err != nil {
		t.Fatal(err)
	}
	var rec logRecorder
	s := &Server{Handler: &fakeHandler{status: Status{Boots: 1}}, UID: os.Getuid(), Log: rec.log}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.serveListener(ctx, &flakyListener{UnixListener: l, fails: 3}) }()
	c := &Client{path: SocketPath(dir, "g")}
	st, err := c.Status(t.Context())
	if err != nil || st.Boots != 1 {
		t.Errorf("Status after 3 failed accepts: %+v, %v", st, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
	want := []string{
		"control socket: accepting a connection: accept unix: accept4: too many open files; retrying in 5ms",
		"control socket: accepting a connection: accept unix: accept4: too many open files; retrying in 10ms",
		"control socket: accepting a connection: accept unix: accept4: too many open files; retrying in 20ms",
	}
	if diff := cmp.Diff(want, rec.take()); diff != "" {
		t.Errorf("logged (-want +got):\n%s", diff)
	}
}
