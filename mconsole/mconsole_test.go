package mconsole

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// fakeKernel is the kernel's side of the mconsole socket.
type fakeKernel struct {
	conn *net.UnixConn
	path string
}

func newFakeKernel(t *testing.T) *fakeKernel {
	t.Helper()
	path := filepath.Join(t.TempDir(), "mconsole")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &fakeKernel{conn: conn, path: path}
}

type request struct {
	Magic, Version, Len uint32
	Data                string
	Size                int // of the datagram
}

// recv reads one request; it fails after timeout.
func (k *fakeKernel) recv(timeout time.Duration) (request, *net.UnixAddr, error) {
	k.conn.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 2048)
	n, from, err := k.conn.ReadFromUnix(buf)
	if err != nil {
		return request{}, nil, err
	}
	if n < requestHeader {
		return request{}, nil, fmt.Errorf("short request of %d bytes", n)
	}
	return request{
		Magic:   binary.NativeEndian.Uint32(buf[0:]),
		Version: binary.NativeEndian.Uint32(buf[4:]),
		Len:     binary.NativeEndian.Uint32(buf[8:]),
		Data:    string(buf[requestHeader:n]),
		Size:    n,
	}, from, nil
}

type fakeReply struct {
	err  int32
	more bool
	data string
	raw  []byte // sent as is when set
}

// encode frames r like mconsole_reply_len: data plus a NUL, len counting it.
func (r fakeReply) encode() []byte {
	if r.raw != nil {
		return r.raw
	}
	b := make([]byte, replyHeader, replyHeader+len(r.data)+1)
	binary.NativeEndian.PutUint32(b[0:], uint32(r.err))
	if r.more {
		binary.NativeEndian.PutUint32(b[4:], 1)
	}
	binary.NativeEndian.PutUint32(b[8:], uint32(len(r.data)+1))
	b = append(b, r.data...)
	return append(b, 0)
}

func (k *fakeKernel) send(to *net.UnixAddr, replies ...fakeReply) error {
	for _, r := range replies {
		if _, err := k.conn.WriteToUnix(r.encode(), to); err != nil {
			return err
		}
	}
	return nil
}

// serve answers one request with replies and reports the request.
func (k *fakeKernel) serve(replies ...fakeReply) <-chan request {
	got := make(chan request, 1)
	go func() {
		defer close(got)
		req, from, err := k.recv(5 * time.Second)
		if err != nil {
			return
		}
		got <- req
		k.send(from, replies...)
	}()
	return got
}

func dial(t *testing.T, path string) *Client {
	t.Helper()
	c, err := Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestCommand(t *testing.T) {
	long := strings.Repeat("0123456789abcdef", 70) // 1120 bytes: three replies
	// A kernel that never stops sending "more": MaxReply and one reply more.
	var endless []fakeReply
	for range MaxReply/511 + 1 {
		endless = append(endless, fakeReply{more: true, data: strings.Repeat("y", 511)})
	}
	tests := []struct {
		name    string
		cmd     string
		replies []fakeReply
		want    string
		wantErr error // compared with cmp.Diff when a *CommandError
		errText string
	}{{
		name:    "single reply",
		cmd:     "version",
		replies: []fakeReply{{data: "Linux (none) 6.1.176 #1 x86_64"}},
		want:    "Linux (none) 6.1.176 #1 x86_64",
	}, {
		name:    "empty reply",
		cmd:     "halt",
		replies: []fakeReply{{data: ""}},
		want:    "",
	}, {
		name: "more continuation",
		cmd:  "help",
		replies: []fakeReply{
			{more: true, data: long[:511]},
			{more: true, data: long[511:1022]},
			{data: long[1022:]},
		},
		want: long,
	}, {
		name:    "unknown command",
		cmd:     "bogus",
		replies: []fakeReply{{err: 1, data: "Unknown command"}},
		wantErr: &CommandError{Command: "bogus", Code: 1, Message: "Unknown command"},
	}, {
		name:    "negative errno",
		cmd:     "remove ubd3",
		replies: []fakeReply{{err: -int32(unix.EBUSY), data: "Device is currently open"}},
		wantErr: &CommandError{Command: "remove ubd3", Code: -16, Message: "Device is currently open"},
	}, {
		name: "error in a long reply",
		cmd:  "proc nothing",
		replies: []fakeReply{
			{err: 1, more: true, data: long[:511]},
			{data: "x"},
		},
		wantErr: &CommandError{Command: "proc nothing", Code: 1, Message: long[:511] + "x"},
	}, {
		name:    "reply without NUL",
		cmd:     "version",
		replies: []fakeReply{{raw: []byte{0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 'o', 'k'}}},
		want:    "ok",
	}, {
		name:    "short reply",
		cmd:     "version",
		replies: []fakeReply{{raw: []byte{0, 0, 0, 0}}},
		errText: "short reply: 4 bytes",
	}, {
		name:    "length beyond reply",
		cmd:     "version",
		replies: []fakeReply{{raw: []byte{0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 'o', 'k'}}},
		errText: "reply length 9 beyond its 2 data bytes",
	}, {
		name:    "endless reply",
		cmd:     "help",
		replies: endless,
		errText: "longer than 65536 bytes",
	}, {
		name:    "longest command",
		cmd:     strings.Repeat("x", 511),
		replies: []fakeReply{{data: "fine"}},
		want:    "fine",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := newFakeKernel(t)
			c := dial(t, k.path)
			reqs := k.serve(tt.replies...)

			got, err := c.Command(context.Background(), tt.cmd)

			wantReq := request{Magic: 0xcafebabe, Version: 2, Len: uint32(len(tt.cmd)), Data: tt.cmd, Size: 12 + len(tt.cmd)}
			if diff := cmp.Diff(wantReq, <-reqs); diff != "" {
				t.Errorf("request (-want +got):\n%s", diff)
			}
			switch {
			case tt.wantErr != nil:
				var ce *CommandError
				if !errors.As(err, &ce) {
					t.Fatalf("Command(%q) error = %v, want a *CommandError", tt.cmd, err)
				}
				if diff := cmp.Diff(tt.wantErr, ce); diff != "" {
					t.Errorf("Command(%q) error (-want +got):\n%s", tt.cmd, diff)
				}
			case tt.errText != "":
				if err == nil || !strings.Contains(err.Error(), tt.errText) {
					t.Errorf("Command(%q) error = %v, want one containing %q", tt.cmd, err, tt.errText)
				}
			case err != nil:
				t.Fatalf("Command(%q): %v", tt.cmd, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Command(%q) (-want +got):\n%s", tt.cmd, diff)
			}
		})
	}
}

func TestCommandErrorText(t *testing.T) {
	err := &CommandError{Command: "foo", Code: 1, Message: "Unknown command"}
	if diff := cmp.Diff(`mconsole "foo": Unknown command (error 1)`, err.Error()); diff != "" {
		t.Error(diff)
	}
}

func TestCommandRefusedLocally(t *testing.T) {
	tests := []struct {
		name, cmd, errText string
	}{
		{"too long", strings.Repeat("x", 512), "command is 512 bytes, the limit is 511"},
		{"NUL byte", "log a\x00b", "contains a NUL byte"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := newFakeKernel(t)
			c := dial(t, k.path)
			_, err := c.Command(context.Background(), tt.cmd)
			if err == nil || !strings.Contains(err.Error(), tt.errText) {
				t.Errorf("Command error = %v, want one containing %q", err, tt.errText)
			}
			if req, _, err := k.recv(50 * time.Millisecond); err == nil {
				t.Errorf("the kernel received %+v, want nothing", req)
			}
		})
	}
}

// TestDialAutobind checks that Dial's bind with an empty name really
// autobinds: the client gets an abstract address of five hex digits, and
// that is where the kernel's replies go.
func TestDialAutobind(t *testing.T) {
	k := newFakeKernel(t)
	c := dial(t, k.path)

	local := c.conn.LocalAddr().String()
	if !regexp.MustCompile(`^@[0-9a-f]{5}$`).MatchString(local) {
		t.Errorf("client address %q, want an autobound abstract address @xxxxx", local)
	}
	var rawName string
	rc, err := c.conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	rc.Control(func(fd uintptr) {
		sa, err := unix.Getsockname(int(fd))
		if err != nil {
			t.Error(err)
			return
		}
		rawName = sa.(*unix.SockaddrUnix).Name
	})
	if rawName != local {
		t.Errorf("getsockname = %q, net reports %q", rawName, local)
	}

	done := make(chan error, 1)
	go func() {
		_, from, err := k.recv(5 * time.Second)
		if err == nil && from.Name != local {
			err = fmt.Errorf("request from %q, want %q", from.Name, local)
		}
		if err == nil {
			err = k.send(from, fakeReply{data: "ok"})
		}
		done <- err
	}()
	if _, err := c.Command(context.Background(), "version"); err != nil {
		t.Error(err)
	}
	if err := <-done; err != nil {
		t.Error(err)
	}
}

func TestDialErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Dial(filepath.Join(dir, "missing")); !errors.Is(err, unix.ENOENT) {
		t.Errorf("Dial(missing) error = %v, want ENOENT", err)
	}
	// A socket file nobody listens on, as a dead kernel leaves it.
	k := newFakeKernel(t)
	k.conn.Close()
	if _, err := Dial(k.path); !errors.Is(err, unix.ECONNREFUSED) {
		t.Errorf("Dial(dead socket) error = %v, want ECONNREFUSED", err)
	}
}

func TestCommandTimeout(t *testing.T) {
	tests := []struct {
		name  string
		ctx   func() (context.Context, context.CancelFunc)
		setup func(*Client)
	}{{
		name: "context deadline",
		ctx: func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 100*time.Millisecond)
		},
	}, {
		name: "default timeout",
		ctx: func() (context.Context, context.CancelFunc) {
			return context.Background(), func() {}
		},
		setup: func(c *Client) { c.timeout = 100 * time.Millisecond },
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := newFakeKernel(t)
			c := dial(t, k.path)
			if tt.setup != nil {
				tt.setup(c)
			}
			reqs := k.serve() // reads the request, never answers
			ctx, cancel := tt.ctx()
			defer cancel()

			start := time.Now()
			_, err := c.Command(ctx, "halt")
			elapsed := time.Since(start)

			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Command error = %v, want context.DeadlineExceeded", err)
			}
			if elapsed < 90*time.Millisecond || elapsed > 2*time.Second {
				t.Errorf("Command returned after %v, want about 100ms", elapsed)
			}
			if req := <-reqs; req.Data != "halt" {
				t.Errorf("kernel got %q, want halt", req.Data)
			}
		})
	}
}

func TestCommandCancel(t *testing.T) {
	k := newFakeKernel(t)
	c := dial(t, k.path)
	reqs := k.serve() // never answers
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-reqs
		cancel()
	}()

	start := time.Now()
	_, err := c.Command(ctx, "version")
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Command error = %v, want context.Canceled", err)
	}
	if elapsed := time.Since(start); elapsed > time.Second {
		t.Errorf("Command returned %v after its cancellation", elapsed)
	}

	// An already cancelled context sends nothing.
	if _, err := c.Command(ctx, "version"); !errors.Is(err, context.Canceled) {
		t.Errorf("Command with a cancelled context: error = %v, want context.Canceled", err)
	}
	if req, _, err := k.recv(50 * time.Millisecond); err == nil {
		t.Errorf("the kernel received %+v after the cancellation, want nothing", req)
	}
}

// TestCommandStaleReply: the answer to a timed-out request arrives late; the
// next command must return its own answer, not the stale one.
func TestCommandStaleReply(t *testing.T) {
	k := newFakeKernel(t)
	c := dial(t, k.path)

	staleSent := make(chan error, 1)
	timedOut := make(chan struct{})
	go func() {
		req, from, err := k.recv(5 * time.Second)
		if err != nil {
			staleSent <- err
			return
		}
		<-timedOut
		staleSent <- k.send(from,
			fakeReply{more: true, data: "stale answer to " + req.Data + ", part 1"},
			fakeReply{data: "part 2"})
		req, from, err = k.recv(5 * time.Second)
		if err == nil {
			k.send(from, fakeReply{data: "fresh answer to " + req.Data})
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.Command(ctx, "first"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("first Command error = %v, want a timeout", err)
	}
	close(timedOut)
	if err := <-staleSent; err != nil {
		t.Fatal(err)
	}

	got, err := c.Command(context.Background(), "second")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff("fresh answer to second", got); diff != "" {
		t.Errorf("second Command (-want +got):\n%s", diff)
	}
}

// TestCommandSerialised: concurrent commands each get their own answer.
func TestCommandSerialised(t *testing.T) {
	k := newFakeKernel(t)
	c := dial(t, k.path)
	const n = 8
	go func() {
		for range n {
			req, from, err := k.recv(5 * time.Second)
			if err != nil {
				return
			}
			// Several replies each, so interleaving would show.
			k.send(from, fakeReply{more: true, data: req.Data}, fakeReply{data: "!"})
		}
	}()

	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := fmt.Sprintf("log %d", i)
			got, err := c.Command(context.Background(), cmd)
			if err != nil {
				t.Error(err)
				return
			}
			if diff := cmp.Diff(cmd+"!", got); diff != "" {
				t.Errorf("Command(%q) (-want +got):\n%s", cmd, diff)
			}
		}()
	}
	wg.Wait()
}
