package guestimage

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"umlsd/internal/testbed"
	"umlsd/internal/umltest"
)

// kernel is a UML guest booted for a test.
type kernel struct {
	mconsole string
	*umltest.Kernel
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

	t.Cleanup(func() { l.Close() }) // after the kernel's own cleanup
	k.Kernel = umltest.Start(t, exec.Command("/usr/bin/linux.uml",
		"ubd0="+cow+","+image, "root=/dev/ubda", "mem=64M",
		"umid="+umid, "uml_dir="+umlDir, "mconsole=notify:"+notify,
		"con=null", "ssl=null", "con0=fd:0,fd:1"))
	return k
}

// waitConsole waits until the console shows want, and fails the test if the
// kernel exits first or the time runs out.
func (k *kernel) waitConsole(t *testing.T, want string, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := k.WaitConsole(ctx, want); err != nil {
		t.Fatal(err)
	}
}

// waitExit waits for the kernel to exit and returns its exit status.
func (k *kernel) waitExit(t *testing.T, timeout time.Duration) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	state, _ := k.Wait(ctx)
	if state == nil {
		t.Fatalf("the kernel still runs %v later", timeout)
	}
	return state.ExitCode()
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
	out := k.Console.String()
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
	out = k.Console.String()
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
	if out := k2.Console.String(); !strings.Contains(out, "MARKER: clean") {
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
	before := strings.Count(k.Console.String(), "TICK")
	time.Sleep(1500 * time.Millisecond)
	select {
	case <-k.Done():
		state, _ := k.Wait(context.Background())
		t.Fatalf("the kernel exited (%v) after cad", state)
	default:
	}
	out := k.Console.String()
	if after := strings.Count(out, "TICK"); after < before+3 {
		t.Errorf("the service printed %d ticks in 1.5 s after cad, want at least 3", after-before)
	}
	if strings.Contains(out, "SHUTDOWN-RAN") || strings.Contains(out, "rcK:") {
		t.Errorf("cad started a shutdown")
	}
}
