// Package mconsole speaks the management console protocol of User-Mode
// Linux: commands to a running kernel over its mconsole socket, and the
// notifications the kernel sends to the socket named by mconsole=notify:PATH.
//
// Wire format (arch/um/include/shared/mconsole.h, Linux 6.1; all fields u32 in
// host byte order, MCONSOLE_MAX_DATA = 512):
//
//	struct mconsole_request { u32 magic, version, len; char data[512]; };
//	struct mconsole_reply   { u32 err, more, len; char data[512]; };
//	struct mconsole_notify  { u32 magic, version; enum type; u32 len; char data[512]; };
//
// Only the used part of data travels: a datagram is the header plus len bytes
// (mconsole_reply_len and mconsole_notify in arch/um/drivers/mconsole_user.c).
// The kernel rejects requests with len >= 512, splits a long answer into
// replies of at most 511 bytes plus a NUL (len counts the NUL), sets more=1 on
// all but the last, and sets err only on the first.
package mconsole

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultTimeout bounds a command whose context has no deadline: UML sends
// nothing when it dies in the middle of a command.
const DefaultTimeout = 5 * time.Second

const (
	magic   = 0xcafebabe // MCONSOLE_MAGIC
	version = 2          // MCONSOLE_VERSION
	maxData = 512        // MCONSOLE_MAX_DATA

	requestHeader = 12 // magic, version, len
	replyHeader   = 12 // err, more, len

	// maxCommand is the longest command the kernel accepts: it refuses
	// len >= MCONSOLE_MAX_DATA because it NUL-terminates data in place.
	maxCommand = maxData - 1
)

// CommandError is a command the kernel answered with a non-zero error code.
type CommandError struct {
	Command string
	// Code is the reply's err field: 1 for most failures ("Unknown
	// command"), a negative errno for device errors.
	Code    int32
	Message string
}

func (e *CommandError) Error() string {
	return fmt.Sprintf("mconsole %q: %s (error %d)", e.Command, e.Message, e.Code)
}

// MaxReply is the most a command's replies may add up to.
const MaxReply = 64 << 10

// Client is a connection to the mconsole socket of one kernel. Its methods
// are safe for concurrent use; commands run one at a time.
type Client struct {
	conn *net.UnixConn
	// sem serialises commands: replies carry no tag, so only one request
	// may be outstanding. A channel rather than a mutex so that waiting for
	// it honours the context.
	sem chan struct{}
	// timeout applies when the context has no deadline; a field so that
	// tests need not wait DefaultTimeout.
	timeout time.Duration
}

// Dial connects to the mconsole socket at path.
//
// The kernel sends its replies to the sender's address, so the client socket
// must be bound. It is bound to an abstract address chosen by the kernel
// (autobind), which needs no file and works from outside UML's chroot as long
// as both share a network namespace; a path address would be resolved inside
// UML's root. Connecting also makes the socket ignore datagrams from anyone
// but the kernel's mconsole socket. If the kernel reboots it creates a new
// socket: Dial again.
func Dial(path string) (*Client, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("creating mconsole client socket: %w", err)
	}
	// An empty name gives bind(2) an address length of just the family,
	// which is Linux's autobind: a unique abstract name of five hex digits.
	if err := unix.Bind(fd, &unix.SockaddrUnix{}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("binding mconsole client socket: %w", err)
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("connecting to mconsole %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), "mconsole:"+path)
	fc, err := net.FileConn(f)
	f.Close() // FileConn holds its own duplicate
	if err != nil {
		return nil, fmt.Errorf("connecting to mconsole %s: %w", path, err)
	}
	return &Client{
		conn:    fc.(*net.UnixConn),
		sem:     make(chan struct{}, 1),
		timeout: DefaultTimeout,
	}, nil
}

// Close closes the connection; a command in progress fails.
func (c *Client) Close() error {
	return c.conn.Close()
}

// Version returns the kernel's answer to "version": sysname, nodename,
// release, version and machine of the guest.
func (c *Client) Version(ctx context.Context) (string, error) {
	return c.Command(ctx, "version")
}

// Command sends cmd and returns the kernel's answer, reassembled from all its
// replies. A reply with a non-zero error code gives a *CommandError. The call
// ends at the context's deadline, or after DefaultTimeout if it has none, with
// an error wrapping context.DeadlineExceeded; cancelling ctx ends it at once
// with an error wrapping context.Canceled.
//
// Replies carry no tag: replies left over from an earlier, timed-out command
// are discarded before sending, but one that arrives only after the new
// request went out cannot be told apart from its answer.
func (c *Client) Command(ctx context.Context, cmd string) (string, error) {
	if len(cmd) > maxCommand {
		return "", fmt.Errorf("sending mconsole %.20q...: command is %d bytes, the limit is %d", cmd, len(cmd), maxCommand)
	}
	if strings.IndexByte(cmd, 0) >= 0 {
		return "", fmt.Errorf("sending mconsole %q: command contains a NUL byte", cmd)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}

	select {
	case c.sem <- struct{}{}:
		defer func() { <-c.sem }()
	case <-ctx.Done():
		return "", fmt.Errorf("waiting to send mconsole %q: %w", cmd, ctx.Err())
	}
	// select picks at random when ctx is done and the semaphore free.
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("sending mconsole %q: %w", cmd, err)
	}

	deadline, _ := ctx.Deadline()
	if err := c.conn.SetDeadline(deadline); err != nil {
		return "", fmt.Errorf("sending mconsole %q: %w", cmd, err)
	}
	defer interruptOnDone(ctx, c.conn)()

	// A reply that arrived after an earlier request timed out would
	// otherwise be taken for the answer to this one.
	if err := drain(c.conn); err != nil {
		return "", ioError(ctx, fmt.Sprintf("sending mconsole %q", cmd), err)
	}
	if _, err := c.conn.Write(encodeRequest(cmd)); err != nil {
		return "", ioError(ctx, fmt.Sprintf("sending mconsole %q", cmd), err)
	}

	var (
		out  strings.Builder
		code int32
		// One byte more than the largest reply, to detect a longer one
		// also without MSG_TRUNC.
		buf = make([]byte, replyHeader+maxData+1)
	)
	for {
		n, _, flags, _, err := c.conn.ReadMsgUnix(buf, nil)
		if err != nil {
			return "", ioError(ctx, fmt.Sprintf("waiting for reply to mconsole %q", cmd), err)
		}
		if flags&unix.MSG_TRUNC != 0 || n > replyHeader+maxData {
			return "", fmt.Errorf("reading reply to mconsole %q: reply longer than %d bytes", cmd, replyHeader+maxData)
		}
		r, err := parseReply(buf[:n])
		if err != nil {
			return "", fmt.Errorf("reading reply to mconsole %q: %w", cmd, err)
		}
		// The kernel sets err on the first reply only.
		if code == 0 {
			code = r.err
		}
		// A compromised kernel could send "more" for ever: cap what a
		// command may return, far above any real reply.
		if out.Len()+len(r.data) > MaxReply {
			return "", fmt.Errorf("reading reply to mconsole %q: longer than %d bytes", cmd, MaxReply)
		}
		out.Write(r.data)
		if !r.more {
			break
		}
	}
	if code != 0 {
		return "", &CommandError{Command: cmd, Code: code, Message: out.String()}
	}
	return out.String(), nil
}

func encodeRequest(cmd string) []byte {
	b := make([]byte, requestHeader, requestHeader+len(cmd))
	binary.NativeEndian.PutUint32(b[0:], magic)
	binary.NativeEndian.PutUint32(b[4:], version)
	binary.NativeEndian.PutUint32(b[8:], uint32(len(cmd)))
	return append(b, cmd...)
}

type reply struct {
	err  int32
	more bool
	data []byte // without the NUL terminator
}

func parseReply(b []byte) (reply, error) {
	if len(b) < replyHeader {
		return reply{}, fmt.Errorf("short reply: %d bytes, the header is %d", len(b), replyHeader)
	}
	r := reply{
		err:  int32(binary.NativeEndian.Uint32(b[0:])),
		more: binary.NativeEndian.Uint32(b[4:]) != 0,
	}
	n := binary.NativeEndian.Uint32(b[8:])
	if n > uint32(len(b)-replyHeader) {
		return reply{}, fmt.Errorf("reply length %d beyond its %d data bytes", n, len(b)-replyHeader)
	}
	r.data = b[replyHeader : replyHeader+n]
	if n > 0 && r.data[n-1] == 0 {
		r.data = r.data[:n-1]
	}
	return r, nil
}

// drain discards the datagrams already queued on conn.
func drain(conn *net.UnixConn) error {
	rc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var rerr error
	buf := make([]byte, replyHeader+maxData)
	err = rc.Read(func(fd uintptr) bool {
		for {
			_, _, err := unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT)
			switch {
			case err == unix.EINTR:
				continue
			case err == unix.EAGAIN:
				return true
			case err != nil:
				rerr = fmt.Errorf("discarding stale replies: %w", err)
				return true
			}
		}
	})
	if err != nil {
		return err
	}
	return rerr
}

// interruptOnDone makes the cancellation of ctx end blocked I/O on conn at
// once. The returned function must be called before conn's deadline is set
// again: it waits for a cancellation already under way, which would
// otherwise poison the next call's deadline.
func interruptOnDone(ctx context.Context, conn *net.UnixConn) (stop func()) {
	fired := make(chan struct{})
	stopFunc := context.AfterFunc(ctx, func() {
		defer close(fired)
		conn.SetDeadline(time.Unix(1, 0))
	})
	return func() {
		if !stopFunc() {
			<-fired
		}
	}
}

// ioError turns a deadline error of conn into the context's error: the
// deadline is the context's, or it was moved by interruptOnDone.
func ioError(ctx context.Context, what string, err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		cerr := ctx.Err()
		if cerr == nil {
			// The socket's deadline can pass just before the context's timer fires.
			cerr = context.DeadlineExceeded
		}
		return fmt.Errorf("%s: %w", what, cerr)
	}
	return fmt.Errorf("%s: %w", what, err)
}
