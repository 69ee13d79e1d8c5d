package control

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"umlsd/mconsole"
)

// Handler is what the server asks the supervisor.
type Handler interface {
	Status(ctx context.Context) (Status, error)
	// Mconsole runs a management console command on the kernel; a kernel
	// that refuses it gives a *mconsole.CommandError.
	Mconsole(ctx context.Context, command string) (string, error)
	// Console is the guest's console hub: ErrNotRunning before the kernel
	// has started.
	Console() (*Hub, error)
}

// Server timeouts.
const (
	// requestTimeout bounds reading a request and writing a response.
	requestTimeout = 5 * time.Second
	// maxCommandTimeout caps the time a client may give an mconsole command.
	maxCommandTimeout = time.Minute
	// defaultCommandTimeout is for clients that give none.
	defaultCommandTimeout = 10 * time.Second
	// outputTimeout bounds each write of console output to a client: a
	// client that stops reading for longer is detached.
	outputTimeout = 10 * time.Second
	// closeGrace is how long connections outlive the server's context.
	closeGrace = time.Second
	// maxConns bounds the connections served at once.
	maxConns = 16
)

// commandTimeout is how long the server waits for the kernel's answer to a
// command whose client gave ms milliseconds (0: none).
func commandTimeout(ms int64) time.Duration {
	d := time.Duration(ms) * time.Millisecond
	if d <= 0 {
		d = defaultCommandTimeout
	}
	return min(d, maxCommandTimeout)
}

// Server answers on a guest's control socket.
type Server struct {
	Handler Handler
	// UID is the only user served: 0 (root) on a host.
	UID int
	// Log reports what went wrong with a client (nil: nothing).
	Log func(msg string)
}

// Listen makes the control socket at path, mode 0600. Its directory must
// be root's and private (mode 0700): that, the mode and Server's peer
// check keep other users out.
func Listen(path string) (*net.UnixListener, error) {
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("making the control socket: %w", err)
	}
	l.SetUnlinkOnClose(false) // the supervisor removes it from its record
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("making the control socket private: %w", err)
	}
	return l, nil
}

// Serve answers connections on l until ctx ends, then closes l and ends
// every connection, and returns once they are all done. A failure to
// accept (too many open files) is logged and retried, backing off up to a
// second, so that it does not end the control socket for the guest's life.
func (s *Server) Serve(ctx context.Context, l *net.UnixListener) error {
	return s.serveListener(ctx, l)
}

// listener is what Serve uses of a *net.UnixListener.
type listener interface {
	AcceptUnix() (*net.UnixConn, error)
	Close() error
}

// Accept's retry delays.
const (
	minAcceptDelay = 5 * time.Millisecond
	maxAcceptDelay = time.Second
)

func (s *Server) serveListener(ctx context.Context, l listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, maxConns)
	var delay time.Duration
	for {
		conn, err := l.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			delay = min(max(2*delay, minAcceptDelay), maxAcceptDelay)
			if s.Log != nil {
				s.Log(fmt.Sprintf("control socket: accepting a connection: %v; retrying in %v", err, delay))
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(delay):
			}
			continue
		}
		delay = 0
		select {
		case sem <- struct{}{}:
		default:
			s.refuse(conn, &wireError{Kind: kindFailed, Message: "the supervisor is busy with other requests; try again"})
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			defer conn.Close()
			// A little later: a session the supervisor just ended is
			// still telling its client why.
			stop := context.AfterFunc(ctx, func() { time.AfterFunc(closeGrace, func() { conn.Close() }) })
			defer stop()
			if err := s.serve(ctx, conn); err != nil && s.Log != nil && ctx.Err() == nil {
				s.Log(fmt.Sprintf("control socket: %v", err))
			}
		}()
	}
}

func (s *Server) refuse(conn *net.UnixConn, e *wireError) {
	defer conn.Close()
	_ = conn.SetWriteDeadline(time.Now().Add(requestTimeout))
	_ = writeLine(conn, response{Error: e})
}

// maxRefusedLine is as much of a refused client's request as the server
// reads (and discards) before it answers with the refusal.
const maxRefusedLine = 4 << 10

func (s *Server) serve(ctx context.Context, conn *net.UnixConn) error {
	_ = conn.SetDeadline(time.Now().Add(requestTimeout))
	r := bufio.NewReader(conn)
	if err := s.checkPeer(conn); err != nil {
		// The client writes its request first: read (a bounded part of)
		// it, unparsed, so that the client reads the refusal rather than
		// a broken pipe.
		_, _ = bufio.NewReaderSize(io.LimitReader(conn, maxRefusedLine), maxRefusedLine).ReadSlice('\n')
		_ = writeLine(conn, response{Error: &wireError{Kind: kindDenied, Message: ErrDenied.Error()}})
		return err
	}
	var req request
	if err := readLine(r, &req); err == io.EOF {
		return nil // connected and closed: a check that the server answers
	} else if err != nil {
		return fmt.Errorf("reading a request: %w", err)
	}
	var resp response
	switch req.Op {
	case opStatus:
		cctx, cancel := context.WithTimeout(ctx, requestTimeout)
		st, err := s.Handler.Status(cctx)
		cancel()
		if err != nil {
			resp.Error = toWire(err)
		} else {
			resp.Status = &st
		}
	case opMconsole:
		cctx, cancel := context.WithTimeout(ctx, commandTimeout(req.Timeout))
		reply, err := s.Handler.Mconsole(cctx, req.Command)
		cancel()
		if err != nil {
			resp.Error = toWire(err)
		} else {
			resp.Reply = &reply
		}
	case opAttach:
		return s.attach(ctx, conn, r, req)
	default:
		resp.Error = &wireError{Kind: kindFailed, Message: fmt.Sprintf("unknown request %q; umlctl and uml-supervisor are of different versions", req.Op)}
	}
	_ = conn.SetDeadline(time.Now().Add(requestTimeout))
	return writeLine(conn, resp)
}

// checkPeer refuses a peer that is not s.UID.
func (s *Server) checkPeer(conn *net.UnixConn) error {
	rc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return err
	}
	if cerr != nil {
		return fmt.Errorf("reading the peer's credentials: %w", cerr)
	}
	if int(cred.Uid) != s.UID {
		return fmt.Errorf("refused a client of uid %d (pid %d): the control socket answers uid %d only", cred.Uid, cred.Pid, s.UID)
	}
	return nil
}

// toWire turns a handler's error into what the client decodes.
func toWire(err error) *wireError {
	var ce *mconsole.CommandError
	switch {
	case errors.As(err, &ce):
		return &wireError{Kind: kindKernel, Message: ce.Message, Command: ce.Command, Code: ce.Code}
	case errors.Is(err, ErrNotRunning):
		return &wireError{Kind: kindNotRunning, Message: err.Error()}
	case errors.Is(err, context.DeadlineExceeded):
		return &wireError{Kind: kindTimeout, Message: err.Error()}
	case errors.Is(err, ErrBusy):
		return &wireError{Kind: kindBusy, Message: err.Error()}
	}
	return &wireError{Kind: kindFailed, Message: err.Error()}
}

// attach serves a console session until the client detaches, the session
// ends, or ctx ends.
func (s *Server) attach(ctx context.Context, conn *net.UnixConn, r *bufio.Reader, req request) error {
	hub, err := s.Handler.Console()
	var sess *Session
	if err == nil {
		sess, err = hub.Attach(req.Force)
	}
	if err != nil {
		_ = conn.SetDeadline(time.Now().Add(requestTimeout))
		return writeLine(conn, response{Error: toWire(err)})
	}
	defer sess.Detach()
	if req.Rows > 0 && req.Cols > 0 {
		_ = sess.Resize(req.Rows, req.Cols)
	}
	_ = conn.SetDeadline(time.Now().Add(requestTimeout))
	if err := writeLine(conn, response{Attached: true}); err != nil {
		return err
	}
	_ = conn.SetDeadline(time.Time{})

	// Output: its own goroutine, so that a client that does not read
	// holds up only itself, and is dropped after outputTimeout.
	outDone := make(chan struct{})
	go func() {
		defer close(outDone)
		sendOutput(conn, sess)
	}()
	// Input until the client closes (detach) or the session ends, which
	// closes the connection.
	var ierr error
	for {
		typ, p, err := readFrame(r)
		if err != nil {
			break
		}
		switch typ {
		case frameInput:
			err = sess.Input(p)
		case frameSize:
			if len(p) == 4 {
				err = sess.Resize(binary.BigEndian.Uint16(p), binary.BigEndian.Uint16(p[2:]))
			}
		}
		if err != nil && !errors.Is(err, errDetached) {
			ierr = fmt.Errorf("passing console input: %w", err)
		}
	}
	sess.Detach()
	<-outDone
	return ierr
}

// outputConn is the connection as sendOutput uses it.
type outputConn interface {
	Write(p []byte) (int, error)
	SetWriteDeadline(t time.Time) error
	Close() error
}

// sendOutput sends sess's output to conn until the session ends, then the
// notice saying why. It always closes conn when it returns: that ends the
// input loop, which otherwise waits for the client with no deadline and
// holds one of the server's connections.
func sendOutput(conn outputConn, sess *Session) {
	defer conn.Close()
	send := func(typ byte, p []byte) bool {
		_ = conn.SetWriteDeadline(time.Now().Add(outputTimeout))
		return writeFrame(conn, typ, p) == nil
	}
	for {
		select {
		case <-sess.Wake():
			if p := sess.Take(); len(p) > 0 && !send(frameOutput, p) {
				sess.Detach()
				return
			}
		case <-sess.Done():
			if p := sess.Take(); len(p) > 0 && !send(frameOutput, p) {
				return
			}
			if reason := sess.Reason(); reason != "" {
				send(frameNotice, []byte(reason))
			}
			return
		}
	}
}
