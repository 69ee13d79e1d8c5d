package guestimage

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"umlsd/internal/testbed"
)

// syncBuffer collects the console output written by os/exec's copier.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// kernel is a UML guest booted for a test.
type kernel struct {
	mconsole string
	console  *syncBuffer
	done     chan struct{} // closed when the kernel has exited
	state    *os.ProcessState
}

// boot starts /usr/bin/linux.uml on image with the COW file cow (created if
// missing). The cleanup kills the kernel's whole process group: a guest is
// several host processes.
func boot(t *testing.T, dir, image, cow, umid string) *kernel {
	t.Helper()
	umlDir := filepath.Join(dir, "uml")
	if err := os.MkdirAll(umlDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// A directory left by an earlier boot with the same umid is stale.
	if err := os.RemoveAll(filepath.Join(umlDir, umid)); err != nil {
		t.Fatal(err)
	}
	k := &kernel{
		mconsole: filepath.Join(umlDir, umid, "mconsole"),
		console:  &syncBuffer{},
		done:     make(chan struct{}),
	}
	if len(k.mconsole) >= 108 {
		t.Fatalf("mconsole path %s is too long for a unix socket: use a shorter TMPDIR", k.mconsole)
	}
	notify := filepath.Join(dir, umid+".notify")
	os.Remove(notify)
	l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notify, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	go func() { // drain the notifications
		buf := make([]byte, 4096)
		for {
			if _, err := l.Read(buf); err != nil {
				return
			}
		}
	}()

	cmd := exec.Command("/usr/bin/linux.uml",
		"ubd0="+cow+","+image, "root=/dev/ubda", "mem=64M",
		"umid="+umid, "uml_dir="+umlDir, "mconsole=notify:"+notify,
		"con=null", "ssl=null", "con0=fd:0,fd:1")
	cmd.Stdin = nil // /dev/null
	cmd.Stdout = k.console
	cmd.Stderr = k.console
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := cmd.Process.Pid
	go func() {
		cmd.Wait()
		k.state = cmd.ProcessState
		close(k.done)
	}()
	t.Cleanup(func() {
		if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			t.Errorf("killing the kernel's process group %d: %v", pgid, err)
		}
		<-k.done
		l.Close()
		if t.Failed() {
			t.Logf("console of %s:\n%s", umid, k.console.String())
		}
	})
	return k
}

// waitConsole waits until the console shows want, and fails the test if the
// kernel exits first or the time runs out.
func (k *kernel) waitConsole(t *testing.T, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(k.console.String(), want) {
		select {
		case <-k.done:
			if strings.Contains(k.console.String(), want) {
				return
			}
			t.Fatalf("the kernel exited (%v) before the console showed %q", k.state, want)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the console did not show %q within %v", want, timeout)
		}
	}
}

// waitExit waits for the kernel to exit and returns its exit status.
func (k *kernel) waitExit(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-k.done:
		return k.state.ExitCode()
	case <-time.After(timeout):
		t.Fatalf("the kernel still runs %v later", timeout)
		return 0
	}
}

// mconsole runs Debian's uml_mconsole, which has no timeout of its own and
// can hang, under one.
func (k *kernel) mconsoleCmd(t *testing.T, command string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "uml_mconsole", k.mconsole, command)
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("uml_mconsole %s %s: %v\n%s", k.mconsole, command, err, out)
	}
	return string(out)
}

// cad sends Ctrl-Alt-Del.
func (k *kernel) cad(t *testing.T) {
	t.Helper()
	if out := k.mconsoleCmd(t, "cad"); !strings.HasPrefix(out, "OK") && !strings.Contains(out, "\nOK") {
		t.Fatalf("uml_mconsole cad: %q", out)
	}
}

func requireKernel(t *testing.T) {
	t.Helper()
	testbed.RequireRoot(t)
	testbed.RequireCommands(t, "mke2fs", "debugfs", "busybox", "linux.uml", "uml_mconsole", "uml_moo", "e2fsck", "dumpe2fs")
}

// TestBootPoweroff boots an image in UML: Startup output reaches the
// console, a dynamically linked host program runs, Ctrl-Alt-Del runs
// Shutdown and powers the guest off cleanly (exit status 0, a clean file
// system in the COW file), and what Shutdown wrote is there at the next
// boot.
func TestBootPoweroff(t *testing.T) {
	requireKernel(t)
	t.Parallel()
	dir := t.TempDir()
	image := filepath.Join(dir, "root.img")
	cow := filepath.Join(dir, "root.cow")
	if err := Build(context.Background(), image, Spec{
		Hostname: "gi-test",
		Programs: []string{"/usr/bin/ls"},
		Startup: `echo "STARTUP on $(hostname)"
/usr/bin/ls --version | head -n 1
if [ -e /marker ]; then echo "MARKER: $(cat /marker)"; else echo "NO MARKER"; fi`,
		// Holds a file on / open for writing: / can be remounted
		// read-only only once it is gone.
		Services: []string{"echo SERVICE-UP\nexec sleep 3600 3>>/service.lock"},
		Shutdown: "echo clean > /marker\necho SHUTDOWN-RAN",
	}); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	k := boot(t, dir, image, cow, "gi1")
	k.waitConsole(t, "SERVICE-UP", 30*time.Second)
	t.Logf("boot to SERVICE-UP: %v", time.Since(start).Round(time.Millisecond))
	out := k.console.String()
	for _, want := range []string{"STARTUP on gi-test", "ls (GNU coreutils)", "NO MARKER"} {
		if !strings.Contains(out, want) {
			t.Errorf("the console does not show %q", want)
		}
	}
	if strings.Contains(out, "rcS:") {
		t.Errorf("rcS reported a problem")
	}

	cad := time.Now()
	k.cad(t)
	if code := k.waitExit(t, 15*time.Second); code != 0 {
		t.Fatalf("the kernel exited with status %d after cad, want 0", code)
	}
	t.Logf("cad to kernel exit: %v", time.Since(cad).Round(time.Millisecond))
	out = k.console.String()
	shut, stop := strings.Index(out, "SHUTDOWN-RAN"), strings.Index(out, "rcK: stopping all processes")
	if shut < 0 || stop < 0 || shut > stop {
		t.Errorf("the console shows SHUTDOWN-RAN at %d and rcK stopping processes at %d: want both, in that order", shut, stop)
	}
	for _, bad := range []string{"rcK: cannot", "rcK: the shutdown commands failed", "rcK: killing"} {
		if strings.Contains(out, bad) {
			t.Errorf("the console shows %q", bad)
		}
	}

	// The file system in the COW file is clean: no journal to replay.
	merged := filepath.Join(dir, "merged.img")
	if out, err := exec.Command("uml_moo", cow, merged).CombinedOutput(); err != nil {
		t.Fatalf("uml_moo: %v\n%s", err, out)
	}
	if out, err := exec.Command("dumpe2fs", "-h", merged).CombinedOutput(); err != nil {
		t.Fatalf("dumpe2fs: %v\n%s", err, out)
	} else if !strings.Contains(string(out), "Filesystem state:         clean\n") || strings.Contains(string(out), "needs_recovery") {
		t.Errorf("the file system is not clean after the shutdown:\n%s", out)
	}
	if out, err := exec.Command("e2fsck", "-fn", merged).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn: %v\n%s", err, out)
	}
	os.Remove(merged)

	k2 := boot(t, dir, image, cow, "gi1")
	k2.waitConsole(t, "SERVICE-UP", 30*time.Second)
	if out := k2.console.String(); !strings.Contains(out, "MARKER: clean") {
		t.Errorf("the second boot does not find the marker Shutdown wrote")
	}
	k2.cad(t)
	if code := k2.waitExit(t, 15*time.Second); code != 0 {
		t.Fatalf("the kernel exited with status %d after the second cad, want 0", code)
	}
}

// TestBootCtrlAltDelIgnore: with CtrlAltDel Ignore the guest keeps running
// after cad.
func TestBootCtrlAltDelIgnore(t *testing.T) {
	requireKernel(t)
	t.Parallel()
	dir := t.TempDir()
	image := filepath.Join(dir, "root.img")
	if err := Build(context.Background(), image, Spec{
		CtrlAltDel: Ignore,
		Services:   []string{"i=0\nwhile :; do i=$((i + 1)); echo TICK $i; sleep 0.2; done"},
		Shutdown:   "echo SHUTDOWN-RAN",
	}); err != nil {
		t.Fatal(err)
	}
	k := boot(t, dir, image, filepath.Join(dir, "root.cow"), "gi2")
	k.waitConsole(t, "TICK 1", 30*time.Second)
	k.cad(t)
	// Still ticking well after the cad: init and its services live on.
	before := strings.Count(k.console.String(), "TICK")
	time.Sleep(1500 * time.Millisecond)
	select {
	case <-k.done:
		t.Fatalf("the kernel exited (%v) after cad", k.state)
	default:
	}
	out := k.console.String()
	if after := strings.Count(out, "TICK"); after < before+3 {
		t.Errorf("the service printed %d ticks in 1.5 s after cad, want at least 3", after-before)
	}
	if strings.Contains(out, "SHUTDOWN-RAN") || strings.Contains(out, "rcK:") {
		t.Errorf("cad started a shutdown")
	}
}
