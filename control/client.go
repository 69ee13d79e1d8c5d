package control

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"umlsd/mconsole"
)

// Client talks to a guest's supervisor. Each call uses a connection of its
// own, so a Client may be used from several goroutines.
type Client struct {
	path string
}

// Dial checks that the supervisor of guest name answers on its control
// socket under runtimeDir: ErrNotRunning if there is none.
func Dial(ctx context.Context, runtimeDir, name string) (*Client, error) {
	c := &Client{path: SocketPath(runtimeDir, name)}
	conn, err := c.connect(ctx)
	if err != nil {
		return nil, err
	}
	conn.Close()
	return c, nil
}

// Close releases the client; a Client holds no connection between calls.
func (c *Client) Close() error { return nil }

// dialTimeout bounds a connection when the context has no deadline.
const dialTimeout = 5 * time.Second

func (c *Client) connect(ctx context.Context) (*net.UnixConn, error) {
	d := net.Dialer{Timeout: dialTimeout}
	conn, err := d.DialContext(ctx, "unix", c.path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("connecting to %s: %w", c.path, ErrNotRunning)
		}
		return nil, fmt.Errorf("connecting to %s: %w", c.path, err)
	}
	return conn.(*net.UnixConn), nil
}

// call sends req and reads the response, within ctx or, without a
// deadline, req's wait.
func (c *Client) call(ctx context.Context, req request) (response, *net.UnixConn, *bufio.Reader, error) {
	conn, err := c.connect(ctx)
	if err != nil {
		return response{}, nil, nil, err
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(req.wait())
	}
	_ = conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	fail := func(what string, err error) (response, *net.UnixConn, *bufio.Reader, error) {
		conn.Close()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if cerr := ctx.Err(); cerr != nil {
				err = cerr
			} else {
				err = context.DeadlineExceeded
			}
		}
		return response{}, nil, nil, fmt.Errorf("%s: %w", what, err)
	}
	if err := writeLine(conn, req); err != nil {
		stop()
		return fail("sending a request to the supervisor", err)
	}
	r := bufio.NewReader(conn)
	var resp response
	err = readLine(r, &resp)
	if !stop() {
		// The context ended: the deadline is spent.
		if err == nil {
			err = ctx.Err()
		}
	}
	if err != nil {
		return fail("reading the supervisor's answer", err)
	}
	_ = conn.SetDeadline(time.Time{})
	if resp.Error != nil {
		conn.Close()
		return resp, nil, nil, fromWire(resp.Error)
	}
	return resp, conn, r, nil
}

// wait is how long a client without a deadline waits for the answer to
// req: as long as the server may work on it (for an mconsole command, as
// long as it waits for the kernel), and requestTimeout more, so that a
// slow kernel is reported as such rather than as a supervisor that does
// not answer.
func (req request) wait() time.Duration {
	if req.Op != opMconsole {
		return 2 * requestTimeout
	}
	return commandTimeout(req.Timeout) + requestTimeout
}

func fromWire(e *wireError) error {
	switch e.Kind {
	case kindNotRunning:
		return ErrNotRunning
	case kindTimeout:
		return ErrTimeout
	case kindBusy:
		return ErrBusy
	case kindDenied:
		return ErrDenied
	case kindKernel:
		return &mconsole.CommandError{Command: e.Command, Code: e.Code, Message: e.Message}
	}
	return &RemoteError{Message: e.Message}
}

// Status asks the supervisor about its guest.
func (c *Client) Status(ctx context.Context) (Status, error) {
	resp, conn, _, err := c.call(ctx, request{Op: opStatus})
	if err != nil {
		return Status{}, err
	}
	conn.Close()
	if resp.Status == nil {
		return Status{}, errors.New("reading the supervisor's answer: no status")
	}
	return *resp.Status, nil
}

// Mconsole runs a management console command on the guest's kernel and
// returns its reply. A kernel that refuses the command gives a
// *mconsole.CommandError with its code and message; one that does not
// answer within ctx's deadline gives ErrTimeout (or, when the supervisor
// itself does not answer, an error wrapping context.DeadlineExceeded).
func (c *Client) Mconsole(ctx context.Context, command string) (string, error) {
	req := request{Op: opMconsole, Command: command}
	if deadline, ok := ctx.Deadline(); ok {
		// The supervisor gives up a little before us, so that its answer
		// (the kernel did not answer) arrives.
		d := time.Until(deadline) - 200*time.Millisecond
		if d <= 0 {
			d = time.Until(deadline)
		}
		req.Timeout = max(d.Milliseconds(), 1)
	}
	resp, conn, _, err := c.call(ctx, req)
	if err != nil {
		return "", err
	}
	conn.Close()
	if resp.Reply == nil {
		return "", errors.New("reading the supervisor's answer: no reply")
	}
	return *resp.Reply, nil
}

// AttachOptions are a console session's.
type AttachOptions struct {
	// Force takes the console over from the client attached to it, which
	// is told so; without it Attach fails with ErrBusy.
	Force bool
	// Rows and Cols set the console's window size; 0 leaves it.
	Rows, Cols uint16
}

// Attach attaches to the guest's serial console. ctx bounds the attach
// only, not the session.
func (c *Client) Attach(ctx context.Context, opts AttachOptions) (*Stream, error) {
	_, conn, r, err := c.call(ctx, request{Op: opAttach, Force: opts.Force, Rows: opts.Rows, Cols: opts.Cols})
	if err != nil {
		return nil, err
	}
	return &Stream{conn: conn, r: r}, nil
}

// Stream is an attached console session: Read returns the guest's output
// (recent output first), Write sends it input. Read ends with
// *SessionEnded when the supervisor ended the session (the kernel exited,
// another client took over), or io.EOF when the connection closed
// otherwise. Close detaches.
type Stream struct {
	conn *net.UnixConn
	r    *bufio.Reader

	rmu  sync.Mutex
	rest []byte // output of the current frame not yet read

	wmu sync.Mutex
}

func (s *Stream) Read(p []byte) (int, error) {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	for len(s.rest) == 0 {
		typ, payload, err := readFrame(s.r)
		if err != nil {
			return 0, err
		}
		switch typ {
		case frameOutput:
			s.rest = payload
		case frameNotice:
			return 0, &SessionEnded{Reason: string(payload)}
		}
	}
	n := copy(p, s.rest)
	s.rest = s.rest[n:]
	return n, nil
}

// Write sends p to the guest's console as input.
func (s *Stream) Write(p []byte) (int, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := writeFrame(s.conn, frameInput, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Resize sets the console's window size.
func (s *Stream) Resize(rows, cols uint16) error {
	var b [4]byte
	binary.BigEndian.PutUint16(b[:], rows)
	binary.BigEndian.PutUint16(b[2:], cols)
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return writeFrame(s.conn, frameSize, b[:])
}

// Close detaches from the console; the guest keeps running.
func (s *Stream) Close() error { return s.conn.Close() }
