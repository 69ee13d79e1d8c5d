package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"umlsd/control"
	"umlsd/internal/testbed"
)

// terminal is umlctl console run in the machine on a terminal of the
// test's: a pty whose other side is umlctl's stdin, stdout, stderr and
// controlling terminal.
type terminal struct {
	master *os.File
	cmd    *exec.Cmd
	done   chan struct{} // closed when umlctl has exited
	err    error         // umlctl's exit, set before done is closed

	mu   sync.Mutex
	out  bytes.Buffer
	seen int // output before this was matched by expect
}

// openTerminal opens a pty of rows × cols and runs umlctl args in the
// machine on it.
func openTerminal(t *testing.T, m *testbed.Machine, rows, cols uint16, args ...string) *terminal {
	t.Helper()
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols}); err != nil {
		t.Fatal(err)
	}
	pfd, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TIOCGPTPEER, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC)
	if errno != 0 {
		t.Fatal(errno)
	}
	master, peer := os.NewFile(uintptr(fd), "pty"), os.NewFile(pfd, "pty-peer")
	cmd, err := m.Command(t.Context(), append([]string{"umlctl"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = peer, peer, peer
	// A session of its own with the pty as its controlling terminal, so
	// that a window size change sends it SIGWINCH.
	cmd.SysProcAttr.Setsid, cmd.SysProcAttr.Setctty, cmd.SysProcAttr.Ctty = true, true, 0
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	peer.Close()
	term := &terminal{master: master, cmd: cmd, done: make(chan struct{})}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			term.mu.Lock()
			term.out.Write(buf[:n])
			term.mu.Unlock()
			if err != nil { // EIO: umlctl and everything with the pty are gone
				return
			}
		}
	}()
	go func() {
		term.err = cmd.Wait()
		close(term.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-term.done
		master.Close()
	})
	return term
}

func (term *terminal) typeIn(t *testing.T, s string) {
	t.Helper()
	if _, err := term.master.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

// expect waits until output after the last match matches re, and returns
// the match.
func (term *terminal) expect(t *testing.T, re string) string {
	t.Helper()
	r := regexp.MustCompile(re)
	deadline := time.Now().Add(20 * time.Second)
	for {
		term.mu.Lock()
		out := term.out.Bytes()[term.seen:]
		loc := r.FindIndex(out)
		if loc != nil {
			match := string(out[loc[0]:loc[1]])
			term.seen += loc[1]
			term.mu.Unlock()
			return match
		}
		term.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("the terminal does not show %q after 20 s; it shows after the last match:\n%s", re, term.output(term.seen))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (term *terminal) output(from int) string {
	term.mu.Lock()
	defer term.mu.Unlock()
	return term.out.String()[from:]
}

// wait waits for umlctl to exit and returns how.
func (term *terminal) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-term.done:
		return term.err
	case <-time.After(20 * time.Second):
		t.Fatalf("umlctl console still runs 20 s later; the terminal shows:\n%s", term.output(0))
		return nil
	}
}

// exitStatus is the exit status of a command m.Run ran: 0, or -1 if it
// did not run.
func exitStatus(err error) int {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	}
	return -1
}

// guestStatus asks the guest's supervisor through its control socket.
func guestStatus(t *testing.T, m *testbed.Machine, name string) control.Status {
	t.Helper()
	dir, err := m.HostPath("/run/uml")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, err := control.Dial(ctx, dir, name)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// ticks counts the lines TICK-N of the guest in the journal.
func ticks(t *testing.T, m *testbed.Machine) int {
	return len(regexp.MustCompile(`(?m)^TICK-[0-9]+$`).FindAllString(journal(t, m, "-u", "uml@con.service"), -1))
}

// TestConsole: umlctl console on a real terminal reaches the guest's shell
// (input, output, window size, Ctrl-C) and detaches with Ctrl-], the guest
// running on; sysrq, freeze and thaw reach its kernel; a reboot keeps the
// console; a frozen guest still stops cleanly, and its end ends the session.
func TestConsole(t *testing.T) {
	m := bootWithGuests(t, map[string]string{
		"con":  guestConf("guest.img", readyConsole, "umlsd.shell"),
		"idle": guestConf("guest.img", readyConsole, "umlsd.none"),
	})
	timedStart(t, m, "uml@con.service")

	for _, tt := range []struct {
		args   []string
		status int
		stderr string
	}{
		{[]string{"console", "idle"}, 3, "umlctl: guest idle is not running; start it with systemctl start uml@idle.service\n"},
		{[]string{"console", "nosuch"}, 4, "umlctl: there is no guest nosuch: /etc/uml/nosuch.conf does not exist; umlctl list shows the guests\n"},
		{[]string{"sysrq", "con", "S"}, 2, `umlctl: "S" is not a SysRq key: give one lowercase letter or digit, such as s to sync the guest's disks` + "\n"},
	} {
		_, stderr, err := m.Run(t.Context(), append([]string{"umlctl"}, tt.args...)...)
		if exitStatus(err) != tt.status || stderr != tt.stderr {
			t.Errorf("umlctl %q: exit status %d, stderr %q; want %d, %q", tt.args, exitStatus(err), stderr, tt.status, tt.stderr)
		}
	}

	term := openTerminal(t, m, 40, 132, "console", "con")
	term.expect(t, `Connected to con's console; press Ctrl-\] to detach\.\r\n`)
	term.expect(t, "UMLSD-READY") // replayed
	term.typeIn(t, "\r")
	term.expect(t, "# ")

	t.Run("window size", func(t *testing.T) {
		term.typeIn(t, "stty size\r")
		got := term.expect(t, `\n[0-9]+ [0-9]+\r\n`)
		t.Logf("stty size in the guest on a 40×132 terminal: %q", strings.TrimSpace(got))
		if strings.TrimSpace(got) != "40 132" {
			t.Errorf("stty size in the guest says %q on a 40×132 terminal", strings.TrimSpace(got))
		}
		if err := unix.IoctlSetWinsize(int(term.master.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 50, Col: 100}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond) // SIGWINCH, umlctl, the supervisor, the kernel's winch helper
		term.typeIn(t, "stty size\r")
		got = term.expect(t, `\n[0-9]+ [0-9]+\r\n`)
		t.Logf("stty size in the guest after a resize to 50×100: %q", strings.TrimSpace(got))
		if strings.TrimSpace(got) != "50 100" {
			t.Errorf("stty size in the guest says %q after the terminal became 50×100", strings.TrimSpace(got))
		}
	})

	t.Run("a command and Ctrl-C", func(t *testing.T) {
		term.typeIn(t, "echo MARK-$((20+22))\r")
		term.expect(t, "MARK-42")
		term.typeIn(t, "sleep 100\r")
		time.Sleep(500 * time.Millisecond)
		start := time.Now()
		term.typeIn(t, "\x03")
		term.typeIn(t, "echo AFTER-$((6*7))\r")
		term.expect(t, "AFTER-42")
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("the shell answered %v after Ctrl-C: it did not interrupt sleep 100", d)
		}
	})

	t.Run("one console at a time", func(t *testing.T) {
		_, stderr, err := m.Run(t.Context(), "umlctl", "console", "con")
		if want := "umlctl: another umlctl console is attached to guest con; detach it, or take the console over with umlctl console --force con\n"; exitStatus(err) != 1 || stderr != want {
			t.Errorf("a second umlctl console: exit status %d, stderr %q; want 1, %q", exitStatus(err), stderr, want)
		}
		if st := guestStatus(t, m, "con"); !st.ConsoleAttached || !st.Ready || st.Boots != 1 || st.KernelPID == 0 {
			t.Errorf("status %+v, want a ready guest, booted once, with a console attached", st)
		}
	})

	// Something that shows whether the guest makes progress.
	term.typeIn(t, "i=0; while :; do i=$((i+1)); echo TICK-$i; sleep 0.2; done &\r")
	term.expect(t, "TICK-3")
	term.typeIn(t, "\x1d")
	term.expect(t, "Detached from con's console; the guest keeps running.")
	if err := term.wait(t); err != nil {
		t.Errorf("umlctl console after Ctrl-]: %v", err)
	}
	if got := show(t, m, "uml@con.service", "ActiveState"); got != "active" {
		t.Errorf("the guest is %s after the detach", got)
	}
	got := journal(t, m, "-u", "uml@con.service")
	for _, want := range []string{"MARK-42", "AFTER-42", "TICK-3"} {
		if !strings.Contains(got, want) {
			t.Errorf("the journal lacks the console line %q:\n%s", want, got)
		}
	}

	t.Run("sysrq", func(t *testing.T) {
		out := m.MustRun(t, "umlctl", "sysrq", "con", "s")
		t.Logf("umlctl sysrq con s: %q", out)
		if !strings.Contains(out+journal(t, m, "-u", "uml@con.service"), "Emergency Sync") {
			t.Errorf("neither the reply %q nor the console says Emergency Sync", out)
		}
	})

	t.Run("freeze and thaw", func(t *testing.T) {
		if out := m.MustRun(t, "umlctl", "freeze", "con"); out != "Froze guest con; umlctl thaw con lets it run again.\n" {
			t.Errorf("umlctl freeze: %q", out)
		}
		if st := guestStatus(t, m, "con"); !st.Frozen {
			t.Errorf("status %+v after freeze, want frozen", st)
		}
		_, stderr, err := m.Run(t.Context(), "umlctl", "freeze", "con")
		t.Logf("freezing again: %v: %s", err, stderr)
		if exitStatus(err) != 1 || !strings.Contains(stderr, `the kernel of guest con refused "stop"`) {
			t.Errorf("freezing a frozen guest: exit status %d, %q", exitStatus(err), stderr)
		}
		time.Sleep(500 * time.Millisecond)
		before := ticks(t, m)
		time.Sleep(2 * time.Second)
		if after := ticks(t, m); after != before {
			t.Errorf("the frozen guest printed %d ticks in 2 s", after-before)
		}
		if out := m.MustRun(t, "umlctl", "thaw", "con"); out != "Thawed guest con; it runs again.\n" {
			t.Errorf("umlctl thaw: %q", out)
		}
		if st := guestStatus(t, m, "con"); st.Frozen {
			t.Errorf("status %+v after thaw, want not frozen", st)
		}
		before = ticks(t, m)
		time.Sleep(2 * time.Second)
		if after := ticks(t, m); after < before+3 {
			t.Errorf("the thawed guest printed %d ticks in 2 s, want at least 3", after-before)
		}
	})

	watch := openTerminal(t, m, 24, 80, "console", "con")
	watch.expect(t, "Connected to con's console")
	t.Run("a reboot keeps the console", func(t *testing.T) {
		watch.typeIn(t, "\rreboot\r")
		// Not in the replay: what comes after the reboot.
		watch.expect(t, "rcK: stopping all processes")
		watch.expect(t, "UMLSD-BOOTED")
		watch.expect(t, "UMLSD-READY")
		watch.typeIn(t, "\recho REBOOTED-$((40+2))\r")
		watch.expect(t, "REBOOTED-42")
		if st := guestStatus(t, m, "con"); st.Boots != 2 || !st.ConsoleAttached {
			t.Errorf("status %+v after a reboot, want 2 boots and the console still attached", st)
		}
	})

	t.Run("a frozen guest stops cleanly", func(t *testing.T) {
		// Frozen through the raw command: the supervisor follows it too.
		m.MustRun(t, "umlctl", "mconsole", "con", "stop")
		if st := guestStatus(t, m, "con"); !st.Frozen {
			t.Errorf("status %+v after mconsole stop, want frozen", st)
		}
		m.MustRun(t, "systemctl", "stop", "uml@con.service")
		got := journal(t, m, "-u", "uml@con.service")
		for _, want := range []string{"letting the frozen guest run again", "stopped: the guest shut down cleanly"} {
			if !strings.Contains(got, want) {
				t.Errorf("the journal lacks %q:\n%s", want, got)
			}
		}
		watch.expect(t, `The guest powered off; the console session ended\.`)
		if err := watch.wait(t); err != nil {
			t.Errorf("umlctl console at the guest's poweroff: %v", err)
		}
		requireNothingLeft(t, m, "con")
		if _, stderr, err := m.Run(t.Context(), "umlctl", "freeze", "con"); exitStatus(err) != 3 {
			t.Errorf("umlctl freeze of a stopped guest: exit status %d, %s", exitStatus(err), stderr)
		}
	})
}
