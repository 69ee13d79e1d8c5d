package mconsole

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// NotifyType is the kind of a notification (the type enum of struct
// mconsole_notify).
type NotifyType uint32

const (
	// NotifySocket carries the path of the kernel's mconsole socket. The
	// kernel sends it when the socket is up, before the root file system is
	// mounted, and again after every reboot.
	NotifySocket NotifyType = 0
	// NotifyPanic carries the panic message.
	NotifyPanic NotifyType = 1
	// NotifyHang comes from the uml_watchdog helper when the guest stopped
	// pinging its watchdog device; it carries no data.
	NotifyHang NotifyType = 2
	// NotifyUser carries what the guest wrote to /proc/mconsole.
	NotifyUser NotifyType = 3
)

func (t NotifyType) String() string {
	switch t {
	case NotifySocket:
		return "socket"
	case NotifyPanic:
		return "panic"
	case NotifyHang:
		return "hang"
	case NotifyUser:
		return "user"
	}
	return fmt.Sprintf("NotifyType(%d)", uint32(t))
}

// Notification is one datagram the kernel sent to its notify socket.
type Notification struct {
	Type NotifyType
	// Data without trailing NULs: the kernel sends the socket path and the
	// panic message with their terminator, user data as written.
	Data string
}

const (
	notifyHeader = 16 // magic, version, type, len

	// watchdogHangLen is the size of the HANG packet of uml_watchdog
	// (uml-utilities 20070815, watchdog/uml_watchdog.c, checked in the
	// disassembly of Debian's /usr/bin/uml_watchdog). It still uses the
	// mconsole.h of 2002: unsigned long magic; int version; int type;
	// int len; char data[512], which on LP64 is 536 bytes with padding, and
	// it sends sizeof(packet) - sizeof(data) + len = 24 bytes with len 0:
	// an 8-byte magic, version 2, type 2, len 0 and four bytes of
	// uninitialised data.
	watchdogHangLen = 24
)

// ParseNotification decodes a notification datagram.
func ParseNotification(b []byte) (Notification, error) {
	if isWatchdogHang(b) {
		return Notification{Type: NotifyHang}, nil
	}
	if len(b) < notifyHeader {
		return Notification{}, fmt.Errorf("parsing notification: short packet of %d bytes, the header is %d", len(b), notifyHeader)
	}
	if m := binary.NativeEndian.Uint32(b[0:]); m != magic {
		return Notification{}, fmt.Errorf("parsing notification: bad magic %#08x, want %#08x", m, magic)
	}
	if v := binary.NativeEndian.Uint32(b[4:]); v != version {
		return Notification{}, fmt.Errorf("parsing notification: unsupported version %d, want %d", v, version)
	}
	t := NotifyType(binary.NativeEndian.Uint32(b[8:]))
	n := binary.NativeEndian.Uint32(b[12:])
	if n > maxData {
		return Notification{}, fmt.Errorf("parsing notification: data length %d over the limit of %d", n, maxData)
	}
	if n > uint32(len(b)-notifyHeader) {
		return Notification{}, fmt.Errorf("parsing notification: data length %d beyond the %d bytes of the packet", n, len(b)-notifyHeader)
	}
	data := b[notifyHeader : notifyHeader+n]
	return Notification{Type: t, Data: strings.TrimRight(string(data), "\x00")}, nil
}

// isWatchdogHang reports whether b is uml_watchdog's HANG packet (see
// watchdogHangLen), read in host byte order with a native unsigned long.
func isWatchdogHang(b []byte) bool {
	return len(b) == watchdogHangLen &&
		binary.NativeEndian.Uint64(b[0:]) == magic &&
		binary.NativeEndian.Uint32(b[8:]) == version &&
		NotifyType(binary.NativeEndian.Uint32(b[12:])) == NotifyHang &&
		binary.NativeEndian.Uint32(b[16:]) == 0
}

// Listener receives notifications on a unix datagram socket bound at a path.
// The kernel resolves mconsole=notify:PATH inside its own root, and its host
// user needs write permission on the socket.
type Listener struct {
	conn *net.UnixConn
	path string
	// sem serialises Receive, whose cancellation moves the socket deadline.
	sem chan struct{}
}

// ListenNotify binds a notification socket at path, which must not exist.
func ListenNotify(path string) (*Listener, error) {
	if path == "" || path[0] == '@' {
		// The kernel can only send to a path (strcpy into sun_path).
		return nil, fmt.Errorf("listening for notifications on %q: not a file system path", path)
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("listening for notifications: %w", err)
	}
	return &Listener{conn: conn, path: path, sem: make(chan struct{}, 1)}, nil
}

// Receive waits for the next notification. A datagram that is no valid
// notification gives an error; the next call reads the next datagram.
func (l *Listener) Receive(ctx context.Context) (Notification, error) {
	select {
	case l.sem <- struct{}{}:
		defer func() { <-l.sem }()
	case <-ctx.Done():
		return Notification{}, fmt.Errorf("receiving notification: %w", ctx.Err())
	}
	if err := ctx.Err(); err != nil {
		return Notification{}, fmt.Errorf("receiving notification: %w", err)
	}
	deadline, _ := ctx.Deadline() // zero: none
	if err := l.conn.SetReadDeadline(deadline); err != nil {
		return Notification{}, fmt.Errorf("receiving notification: %w", err)
	}
	defer interruptOnDone(ctx, l.conn)()

	// Room for the largest notification and more, to detect a longer one.
	buf := make([]byte, notifyHeader+maxData+1)
	n, _, flags, _, err := l.conn.ReadMsgUnix(buf, nil)
	if err != nil {
		return Notification{}, ioError(ctx, "receiving notification", err)
	}
	if flags&unix.MSG_TRUNC != 0 || n > notifyHeader+maxData {
		return Notification{}, fmt.Errorf("receiving notification: datagram longer than %d bytes", notifyHeader+maxData)
	}
	return ParseNotification(buf[:n])
}

// Close closes the socket and removes its path.
func (l *Listener) Close() error {
	err := l.conn.Close()
	if rerr := os.Remove(l.path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
		err = errors.Join(err, rerr)
	}
	if err != nil {
		return fmt.Errorf("closing notification socket %s: %w", l.path, err)
	}
	return nil
}
