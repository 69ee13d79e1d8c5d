package mconsole

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"umlsd/internal/testbed"
)

// packet frames a notification like mconsole_notify: header and len bytes.
func packet(magic, version uint32, typ NotifyType, n uint32, data string) []byte {
	b := make([]byte, notifyHeader, notifyHeader+len(data))
	binary.NativeEndian.PutUint32(b[0:], magic)
	binary.NativeEndian.PutUint32(b[4:], version)
	binary.NativeEndian.PutUint32(b[8:], uint32(typ))
	binary.NativeEndian.PutUint32(b[12:], n)
	return append(b, data...)
}

// watchdogPacket is the 24-byte HANG packet of uml_watchdog: unsigned long
// magic, int version, int type, int len, and four bytes of stack garbage.
func watchdogPacket(garbage string) []byte {
	b := make([]byte, 20, 24)
	binary.NativeEndian.PutUint64(b[0:], 0xcafebabe)
	binary.NativeEndian.PutUint32(b[8:], 2)
	binary.NativeEndian.PutUint32(b[12:], 2)
	binary.NativeEndian.PutUint32(b[16:], 0)
	return append(b, garbage...)
}

func TestParseNotification(t *testing.T) {
	const m, v = 0xcafebabe, 2
	tests := []struct {
		name    string
		b       []byte
		want    Notification
		errText string
	}{
		{"socket", packet(m, v, NotifySocket, 26, "/tmp/umlx/run/t1/mconsole\x00"),
			Notification{NotifySocket, "/tmp/umlx/run/t1/mconsole"}, ""},
		{"panic", packet(m, v, NotifyPanic, 30, "Attempted to kill init! (0x0)\x00"),
			Notification{NotifyPanic, "Attempted to kill init! (0x0)"}, ""},
		{"hang", packet(m, v, NotifyHang, 0, ""), Notification{NotifyHang, ""}, ""},
		{"user", packet(m, v, NotifyUser, 7, "READY=1"), Notification{NotifyUser, "READY=1"}, ""},
		{"user with newline", packet(m, v, NotifyUser, 8, "READY=1\n"), Notification{NotifyUser, "READY=1\n"}, ""},
		{"several trailing NULs", packet(m, v, NotifyUser, 4, "ab\x00\x00"), Notification{NotifyUser, "ab"}, ""},
		{"unknown type", packet(m, v, 9, 1, "x"), Notification{NotifyType(9), "x"}, ""},
		{"bytes after the data", packet(m, v, NotifyUser, 2, "ok-and-more"), Notification{NotifyUser, "ok"}, ""},
		{"largest", packet(m, v, NotifyPanic, 512, strings.Repeat("p", 512)),
			Notification{NotifyPanic, strings.Repeat("p", 512)}, ""},
		{"uml_watchdog hang", watchdogPacket("\xde\xad\xbe\xef"), Notification{NotifyHang, ""}, ""},
		{"uml_watchdog hang, zero garbage", watchdogPacket("\x00\x00\x00\x00"), Notification{NotifyHang, ""}, ""},

		{"empty", nil, Notification{}, "short packet of 0 bytes"},
		{"short", packet(m, v, NotifyUser, 0, "")[:15], Notification{}, "short packet of 15 bytes"},
		{"bad magic", packet(0xdeadbeef, v, NotifyUser, 0, ""), Notification{}, "bad magic 0xdeadbeef"},
		{"bad version", packet(m, 1, NotifyUser, 0, ""), Notification{}, "unsupported version 1"},
		{"length beyond packet", packet(m, v, NotifyUser, 8, "READY=1"), Notification{},
			"data length 8 beyond the 7 bytes"},
		{"length over the limit", packet(m, v, NotifyUser, 513, strings.Repeat("x", 513)), Notification{},
			"data length 513 over the limit of 512"},
		// 24 bytes, but not uml_watchdog's packet: parsed as version 2.
		{"24 bytes, not a hang", func() []byte {
			b := watchdogPacket("garb")
			binary.NativeEndian.PutUint32(b[12:], uint32(NotifyPanic))
			return b
		}(), Notification{}, "unsupported version 0"},
		{"watchdog layout, 25 bytes", append(watchdogPacket("garb"), 0), Notification{}, "unsupported version 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseNotification(tt.b)
			if tt.errText != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errText) {
					t.Errorf("ParseNotification error = %v, want one containing %q", err, tt.errText)
				}
			} else if err != nil {
				t.Errorf("ParseNotification: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseNotification (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNotifyTypeString(t *testing.T) {
	got := []string{NotifySocket.String(), NotifyPanic.String(), NotifyHang.String(), NotifyUser.String(), NotifyType(7).String()}
	want := []string{"socket", "panic", "hang", "user", "NotifyType(7)"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("String (-want +got):\n%s", diff)
	}
}

func listen(t *testing.T) (*Listener, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	l, err := ListenNotify(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, path
}

// sendTo sends datagrams to path as the kernel does: from an unbound socket.
func sendTo(t *testing.T, path string, datagrams ...[]byte) {
	t.Helper()
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, d := range datagrams {
		if _, err := conn.Write(d); err != nil {
			t.Fatal(err)
		}
	}
}

func TestListener(t *testing.T) {
	l, path := listen(t)

	if _, err := ListenNotify(path); err == nil {
		t.Error("ListenNotify on an existing path succeeded")
	}
	if _, err := ListenNotify("@abstract"); err == nil {
		t.Error("ListenNotify on an abstract name succeeded")
	}

	sendTo(t, path,
		packet(0xcafebabe, 2, NotifySocket, 12, "/x/mconsole\x00"),
		[]byte("garbage that is long enough"),
		watchdogPacket("\x01\x02\x03\x04"),
		packet(0xcafebabe, 2, NotifyUser, 7, "READY=1"),
	)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var got []Notification
	var errs int
	for range 4 {
		n, err := l.Receive(ctx)
		if err != nil {
			errs++
			continue
		}
		got = append(got, n)
	}
	want := []Notification{{NotifySocket, "/x/mconsole"}, {NotifyHang, ""}, {NotifyUser, "READY=1"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("received (-want +got):\n%s", diff)
	}
	if errs != 1 {
		t.Errorf("%d errors, want 1 for the garbage", errs)
	}

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after Close, Lstat(%s) error = %v, want it gone", path, err)
	}
}

func TestListenerReceiveEnds(t *testing.T) {
	l, _ := listen(t)

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := l.Receive(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Receive error = %v, want context.DeadlineExceeded", err)
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("Receive returned after %v, want about 100ms", elapsed)
	}

	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start = time.Now()
	if _, err := l.Receive(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Receive error = %v, want context.Canceled", err)
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("Receive returned %v after its cancellation", elapsed)
	}
}

// TestWatchdogHang parses the datagram of the real uml_watchdog. It sends
// it from its SIGALRM handler, normally after 60 s without a ping; the test
// delivers the signal at once.
func TestWatchdogHang(t *testing.T) {
	testbed.RequireCommands(t, "uml_watchdog")
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	cmd := exec.Command("uml_watchdog", "-mconsole", path)
	stdin, err := cmd.StdinPipe() // kept open: EOF would make it exit
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		stdin.Close()
		cmd.Wait()
	}()
	// It writes one byte once its handler is installed.
	if _, err := io.ReadFull(stdout, make([]byte, 1)); err != nil {
		t.Fatalf("reading uml_watchdog's start byte: %v", err)
	}
	if err := cmd.Process.Signal(syscall.SIGALRM); err != nil {
		t.Fatal(err)
	}

	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1024)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("uml_watchdog sent % x", buf[:n])
	if n != 24 {
		t.Errorf("uml_watchdog sent %d bytes, want 24", n)
	}
	got, err := ParseNotification(buf[:n])
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(Notification{Type: NotifyHang}, got); diff != "" {
		t.Errorf("notification (-want +got):\n%s", diff)
	}
}
