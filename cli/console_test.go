package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"umlsd/control"
	"umlsd/internal/testbed"
	"umlsd/mconsole"
)

// fakeSupervisor answers on guest g's control socket.
type fakeSupervisor struct {
	hub *control.Hub

	mu       sync.Mutex
	commands []string
	input    bytes.Buffer
}

func (f *fakeSupervisor) Status(context.Context) (control.Status, error) {
	return control.Status{KernelPID: 1, Boots: 2, Ready: true}, nil
}

func (f *fakeSupervisor) Mconsole(ctx context.Context, cmd string) (string, error) {
	f.mu.Lock()
	f.commands = append(f.commands, cmd)
	f.mu.Unlock()
	switch {
	case cmd == "hang":
		<-ctx.Done()
		return "", ctx.Err()
	case cmd == "go":
		return "", &mconsole.CommandError{Command: cmd, Code: 1, Message: "Not stopped"}
	case strings.HasPrefix(cmd, "sysrq "):
		return "sysrq: Emergency Sync\n", nil
	case cmd == "stop":
		return "stopped", nil
	case cmd == "version":
		return "Linux 6.1.176 #1 SMP", nil
	case cmd == "proc uptime":
		return "12270.50 100.00\n", nil
	}
	return "reply to " + cmd, nil
}

func (f *fakeSupervisor) Console() (*control.Hub, error) { return f.hub, nil }

func (f *fakeSupervisor) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.input.Write(p)
}

func (f *fakeSupervisor) SetSize(rows, cols uint16) error { return nil }

// testEnv has guests g (running, with a fake supervisor) and idle (not
// running).
func testEnv(t *testing.T) (*Env, *fakeSupervisor) {
	t.Helper()
	dir := t.TempDir()
	env := &Env{ConfigDir: filepath.Join(dir, "etc"), RuntimeDir: filepath.Join(dir, "run")}
	for _, d := range []string{env.ConfigDir, filepath.Join(env.RuntimeDir, "g")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"g", "idle"} {
		if err := os.WriteFile(filepath.Join(env.ConfigDir, name+".conf"), []byte("[Guest]\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f := &fakeSupervisor{}
	f.hub = control.NewHub(f)
	f.hub.Write([]byte("earlier output\n# "))
	l, err := control.Listen(control.SocketPath(env.RuntimeDir, "g"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		(&control.Server{Handler: f, UID: os.Getuid()}).Serve(ctx, l)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return env, f
}

type result struct {
	Status         int
	Stdout, Stderr string
}

func run(t *testing.T, env *Env, stdin io.Reader, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	env.Stdin, env.Stdout, env.Stderr = stdin, &stdout, &stderr
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err := Run(ctx, args, env)
	return result{ExitStatus(err), stdout.String(), stderr.String()}
}

func TestMconsoleVerbs(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want result
		sent []string
	}{
		{[]string{"sysrq", "g", "s"}, result{0, "sysrq: Emergency Sync\n", ""}, []string{"sysrq s"}},
		{[]string{"sysrq", "g", "ss"}, result{2, "", `umlctl: "ss" is not a SysRq key: give one lowercase letter or digit, such as s to sync the guest's disks` + "\n"}, nil},
		{[]string{"sysrq", "g", "S"}, result{2, "", `umlctl: "S" is not a SysRq key: give one lowercase letter or digit, such as s to sync the guest's disks` + "\n"}, nil},
		{[]string{"sysrq", "g"}, result{2, "", "umlctl: accepts 2 arg(s), received 1; see umlctl sysrq --help\n"}, nil},
		{[]string{"mconsole", "g", "proc", "--not-a-flag", "meminfo"}, result{0, "reply to proc --not-a-flag meminfo\n", ""}, []string{"proc --not-a-flag meminfo"}},
		{[]string{"mconsole", "g"}, result{2, "", "umlctl: requires at least 2 arg(s), only received 1; see umlctl mconsole --help\n"}, nil},
		{[]string{"freeze", "g"}, result{0, "Froze guest g; umlctl thaw g lets it run again.\n", ""}, []string{"stop"}},
		{[]string{"thaw", "g"}, result{1, "", `umlctl: the kernel of guest g refused "go": Not stopped` + "\n"}, []string{"go"}},
		{[]string{"mconsole", "--timeout", "300ms", "g", "hang"}, result{1, "", `umlctl: the kernel of guest g did not answer "hang" within 300ms; it may be hung (see systemctl status uml@g.service), or give it more time with --timeout` + "\n"}, []string{"hang"}},
		{[]string{"mconsole", "--timeout", "0s", "g", "version"}, result{2, "", "umlctl: --timeout must be positive; see umlctl mconsole --help\n"}, nil},
		{[]string{"freeze", "idle"}, result{3, "", "umlctl: guest idle is not running; start it with systemctl start uml@idle.service\n"}, nil},
		{[]string{"thaw", "nosuch"}, result{4, "", "umlctl: there is no guest nosuch: CONFIG/nosuch.conf does not exist; umlctl list shows the guests\n"}, nil},
		{[]string{"sysrq", "Bad/Name", "s"}, result{4, "", `umlctl: there is no guest "Bad/Name": a guest name is up to 32 lowercase letters, digits, - and _, starting with a letter or digit` + "\n"}, nil},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			env, f := testEnv(t)
			got := run(t, env, strings.NewReader(""), tt.args...)
			got.Stderr = strings.ReplaceAll(got.Stderr, env.ConfigDir, "CONFIG")
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("umlctl %q (-want +got):\n%s", tt.args, diff)
			}
			if diff := cmp.Diff(tt.sent, f.commands); diff != "" {
				t.Errorf("commands sent to the kernel (-want +got):\n%s", diff)
			}
		})
	}
}

// TestConsoleNotATerminal: without a terminal, input is forwarded up to
// Ctrl-], which detaches.
func TestConsoleNotATerminal(t *testing.T) {
	env, f := testEnv(t)
	// The detach key comes after the output was seen.
	pr, pw := io.Pipe()
	go func() {
		pw.Write([]byte("uname -a\r"))
		time.Sleep(200 * time.Millisecond)
		pw.Write([]byte("x\x1dnot sent"))
	}()
	got := run(t, env, pr, "console", "g")
	want := result{0, "earlier output\n# ", "Connected to g's console; press Ctrl-] to detach.\n\nDetached from g's console; the guest keeps running.\n"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("umlctl console g (-want +got):\n%s", diff)
	}
	// The supervisor sees the input and the detach a moment later.
	waitAttached(t, f.hub, false)
	f.mu.Lock()
	input := f.input.String()
	f.mu.Unlock()
	if input != "uname -a\rx" {
		t.Errorf("the guest got %q, want what was typed before Ctrl-]", input)
	}

	// Busy, and taken over.
	pr, pw = io.Pipe()
	defer pw.Close()
	first := make(chan result)
	go func() {
		env := *env
		first <- run(t, &env, pr, "console", "g")
	}()
	waitAttached(t, f.hub, true)
	env2 := *env
	busy := run(t, &env2, strings.NewReader(""), "console", "g")
	if diff := cmp.Diff(result{1, "", "umlctl: another umlctl console is attached to guest g; detach it, or take the console over with umlctl console --force g\n"}, busy); diff != "" {
		t.Errorf("a second umlctl console (-want +got):\n%s", diff)
	}
	env3 := *env
	taker := make(chan result)
	go func() { taker <- run(t, &env3, strings.NewReader("\x1d"), "console", "--force", "g") }()
	r := <-first
	if want := "Connected to g's console; press Ctrl-] to detach.\n\nAnother umlctl console took this console over (--force); the guest keeps running.\n"; r.Status != 0 || r.Stderr != want {
		t.Errorf("the console taken over: status %d, stderr %q; want 0, %q", r.Status, r.Stderr, want)
	}
	if r := <-taker; r.Status != 0 {
		t.Errorf("umlctl console --force: %+v", r)
	}

	// The guest's end ends the session.
	env4 := *env
	ended := make(chan result)
	pr2, pw2 := io.Pipe()
	defer pw2.Close()
	waitAttached(t, f.hub, false)
	go func() { ended <- run(t, &env4, pr2, "console", "g") }()
	waitAttached(t, f.hub, true)
	f.hub.Write([]byte("The system is going down NOW!\n"))
	f.hub.Close("the guest powered off; the console session ended")
	r = <-ended
	if want := "Connected to g's console; press Ctrl-] to detach.\n\nThe guest powered off; the console session ended.\n"; r.Status != 0 || r.Stderr != want || !strings.HasSuffix(r.Stdout, "going down NOW!\n") {
		t.Errorf("the session at the guest's end: %+v", r)
	}
	if r := run(t, env, strings.NewReader(""), "console", "g"); r.Status != ExitNotRunning {
		t.Errorf("umlctl console after the guest's end: %+v, want exit status %d", r, ExitNotRunning)
	}
}

func waitAttached(t *testing.T, hub *control.Hub, want bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for hub.Attached() != want {
		if time.Now().After(deadline) {
			t.Fatalf("the console hub is not attached: %v after 5 s", want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestConsoleNoGuest(t *testing.T) {
	env, _ := testEnv(t)
	for _, tt := range []struct {
		name string
		want result
	}{
		{"idle", result{3, "", "umlctl: guest idle is not running; start it with systemctl start uml@idle.service\n"}},
		{"nosuch", result{4, "", "umlctl: there is no guest nosuch: CONFIG/nosuch.conf does not exist; umlctl list shows the guests\n"}},
	} {
		got := run(t, env, strings.NewReader(""), "console", tt.name)
		got.Stderr = strings.ReplaceAll(got.Stderr, env.ConfigDir, "CONFIG")
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("umlctl console %s (-want +got):\n%s", tt.name, diff)
		}
	}
}

// chunks returns its strings one per Read.
type chunks []string

func (c *chunks) Read(p []byte) (int, error) {
	if len(*c) == 0 {
		return 0, io.EOF
	}
	n := copy(p, (*c)[0])
	(*c)[0] = (*c)[0][n:]
	if (*c)[0] == "" {
		*c = (*c)[1:]
	}
	return n, nil
}

func TestForwardInput(t *testing.T) {
	for _, tt := range []struct {
		name     string
		reads    []string
		want     string
		detached bool
	}{
		{"to the end", []string{"ls\r", "\x03", "exit\r"}, "ls\r\x03exit\r", false},
		{"Ctrl-] in a read", []string{"ab", "c\x1dd", "e"}, "abc", true},
		{"Ctrl-] starts a read", []string{"abc", "\x1d", "never"}, "abc", true},
		{"Ctrl-] ends a read", []string{"abc\x1d", "never"}, "abc", true},
		{"Ctrl-] first", []string{"\x1dabc"}, "", true},
		{"Ctrl-C and escapes pass", []string{"\x03\x1b[A\x1c"}, "\x03\x1b[A\x1c", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := chunks(append([]string(nil), tt.reads...))
			var w bytes.Buffer
			err := forwardInput(&r, &w)
			if got := errors.Is(err, errDetach); got != tt.detached || err != nil && !got {
				t.Errorf("forwardInput: %v, want detached %v", err, tt.detached)
			}
			if w.String() != tt.want {
				t.Errorf("forwarded %q, want %q", w.String(), tt.want)
			}
		})
	}
	// One byte at a time, too.
	var w bytes.Buffer
	if err := forwardInput(iotest.OneByteReader(strings.NewReader("ok\x1dno")), &w); !errors.Is(err, errDetach) || w.String() != "ok" {
		t.Errorf("one byte at a time: %v, forwarded %q", err, w.String())
	}
}

// openPty opens a pseudo-terminal: its master, and its other side.
func openPty(t *testing.T) (master, tty *os.File) {
	t.Helper()
	testbed.RequireFile(t, "/dev/ptmx", "pseudo-terminals") // in CI, a failure
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("opening a pseudo-terminal: %v", err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	pfd, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TIOCGPTPEER, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC)
	if errno != 0 {
		t.Fatal(errno)
	}
	master, tty = os.NewFile(uintptr(fd), "ptmx"), os.NewFile(pfd, "pty")
	t.Cleanup(func() { master.Close(); tty.Close() })
	return master, tty
}

// TestConsoleHangup: a hangup detaches, and leaves the terminal as it was
// rather than raw.
func TestConsoleHangup(t *testing.T) {
	env, f := testEnv(t)
	_, tty := openPty(t)
	before, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan result)
	go func() { done <- run(t, env, tty, "console", "g") }()
	waitAttached(t, f.hub, true)
	if err := unix.Kill(os.Getpid(), unix.SIGHUP); err != nil {
		t.Fatal(err)
	}
	var r result
	select {
	case r = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("umlctl console did not end 5 s after a hangup")
	}
	want := result{0, "earlier output\n# ", "Connected to g's console; press Ctrl-] to detach.\r\n\r\nDetached from g's console; the guest keeps running.\r\n"}
	if diff := cmp.Diff(want, r); diff != "" {
		t.Errorf("umlctl console g at a hangup (-want +got):\n%s", diff)
	}
	after, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if *after != *before {
		t.Errorf("the terminal was left changed: %+v, was %+v", *after, *before)
	}
}

// TestFollowWindow: window size changes are passed on until done.
func TestFollowWindow(t *testing.T) {
	winch := make(chan os.Signal, 1)
	done := make(chan struct{})
	resized := make(chan struct{}, 1)
	ended := make(chan struct{})
	go func() { defer close(ended); followWindow(done, winch, func() { resized <- struct{}{} }) }()
	winch <- unix.SIGWINCH
	select {
	case <-resized:
	case <-time.After(5 * time.Second):
		t.Fatal("a window size change was not passed on")
	}
	close(done)
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("followWindow did not return 5 s after done")
	}
}

// outputHelper is the environment variable that makes the test binary run
// umlctl console with its standard output closed.
const outputHelper = "UMLCTL_TEST_CONSOLE_OUTPUT_CLOSED"

// TestConsoleOutputClosed: umlctl console | tee, tee gone: a write to the
// standard output fails, umlctl says so and detaches rather than die of
// SIGPIPE with the terminal left raw. In a process of its own: SIGPIPE
// kills only for a write to fd 1 or 2.
func TestConsoleOutputClosed(t *testing.T) {
	if os.Getenv(outputHelper) != "" {
		env, f := testEnv(t)
		go func() {
			waitAttached(t, f.hub, true)
			for range 100 {
				f.hub.Write([]byte("output\n"))
				time.Sleep(10 * time.Millisecond)
			}
		}()
		pr, pw := io.Pipe()
		defer pw.Close()
		env.Stdin, env.Stdout, env.Stderr = pr, os.Stdout, io.Discard
		err := Run(t.Context(), []string{"console", "g"}, env)
		fmt.Fprintf(os.Stderr, "status %d: %v\n", ExitStatus(err), err)
		os.Exit(0) // the test's own report would go to the closed output
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	pr.Close()
	defer pw.Close()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestConsoleOutputClosed$")
	cmd.Env = append(os.Environ(), outputHelper+"=1")
	cmd.Stdout, cmd.Stderr = pw, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("umlctl console with its output closed: %v; stderr %q", err, stderr.String())
	}
	want := "status 1: writing the console's output failed (write /dev/stdout: broken pipe), so umlctl detached from guest g's console; the guest keeps running\n"
	if got := stderr.String(); got != want {
		t.Errorf("stderr %q, want %q", got, want)
	}
}

// TestConsoleEndPrintable: the reason a session ended, which may hold what
// the guest's kernel said, is printed outside the console's stream, so its
// control characters are escaped.
func TestConsoleEndPrintable(t *testing.T) {
	env, f := testEnv(t)
	pr, pw := io.Pipe()
	defer pw.Close()
	ended := make(chan result)
	go func() { ended <- run(t, env, pr, "console", "g") }()
	waitAttached(t, f.hub, true)
	f.hub.Close("the guest's kernel exited (\x1b]52;c;cm0gLXJmIH4=\a\nforged line); the console session ended")
	r := <-ended
	want := result{0, "earlier output\n# ", "Connected to g's console; press Ctrl-] to detach.\n\nThe guest's kernel exited (\\x1b]52;c;cm0gLXJmIH4=\\x07\\nforged line); the console session ended.\n"}
	if diff := cmp.Diff(want, r); diff != "" {
		t.Errorf("umlctl console g (-want +got):\n%s", diff)
	}
}
