package mconsole

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"umlsd/internal/testbed"
	"umlsd/internal/umltest"
)

// guestInit is the guest's PID 1: it signals readiness through
// /proc/mconsole, which exists only with mconsole=notify configured. An init
// that exits would panic the kernel, so it sleeps until the test ends.
const guestInit = `#!/bin/busybox sh
echo umlsd-mconsole-test: init started
/bin/busybox mount -t proc proc /proc
/bin/busybox printf READY=1 > /proc/mconsole
exec /bin/busybox sleep 600
`

// guest is a UML kernel booted for a test.
type guest struct {
	mconsole string // where the kernel's mconsole socket should be
	notify   *Listener
	*umltest.Kernel
}

// bootGuest boots /usr/bin/linux.uml with no disk: its root file system is a
// hostfs view of a temporary directory holding a static busybox and
// guestInit. The whole process group of the kernel is killed when the test
// ends, and its console output is logged if the test failed.
func bootGuest(t *testing.T) *guest {
	t.Helper()
	testbed.RequireRoot(t)
	testbed.RequireCommands(t, "linux.uml", "uml_mconsole", "busybox")

	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	for _, d := range []string{"bin", "proc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyStaticBusybox(t, filepath.Join(root, "bin", "busybox"))
	if err := os.WriteFile(filepath.Join(root, "init"), []byte(guestInit), 0o755); err != nil {
		t.Fatal(err)
	}

	umlDir := filepath.Join(dir, "run")
	if err := os.Mkdir(umlDir, 0o755); err != nil {
		t.Fatal(err)
	}
	const umid = "mctest"
	g := &guest{
		mconsole: filepath.Join(umlDir, umid, "mconsole"),
	}
	// Longer, and the kernel silently runs without an mconsole.
	if len(g.mconsole) >= 108 {
		t.Fatalf("mconsole path %s is %d bytes, over the 107 of sun_path: use a shorter TMPDIR", g.mconsole, len(g.mconsole))
	}
	notifyPath := filepath.Join(dir, "notify")
	l, err := ListenNotify(notifyPath)
	if err != nil {
		t.Fatal(err)
	}
	g.notify = l
	t.Cleanup(func() { l.Close() })

	start := time.Now()
	t.Cleanup(func() { // after the kernel's own cleanup
		t.Logf("kernel ran for %v", time.Since(start).Round(time.Millisecond))
	})
	g.Kernel = umltest.Start(t, exec.Command("linux.uml",
		// hostfs=DIR confines hostfs to DIR; the root mount with no
		// rootflags is DIR itself.
		"root=/dev/root", "rootfstype=hostfs", "hostfs="+root,
		"init=/init", "mem=64M",
		"umid="+umid, "uml_dir="+umlDir,
		"mconsole=notify:"+notifyPath,
		"con=null", "ssl=null", "con0=fd:0,fd:1",
	))
	return g
}

// copyStaticBusybox copies busybox to dst; the guest has no libraries.
func copyStaticBusybox(t *testing.T, dst string) {
	t.Helper()
	src, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatalf("%s is dynamically linked; the guest needs a static busybox (Debian package busybox-static)", src)
		}
	}
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// context returns a context that also ends when the kernel exits, so that a
// dead kernel fails the test at once rather than at the timeout.
func (g *guest) context(t *testing.T, timeout time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	go func() {
		select {
		case <-g.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx
}

// reference runs Debian's uml_mconsole, which has no timeout of its own, and
// returns its standard output.
func reference(t *testing.T, sock, cmd string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, "uml_mconsole", sock, cmd)
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	c.WaitDelay = time.Second
	err := c.Run()
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("uml_mconsole %s %q hung: %v", sock, cmd, ctx.Err())
	case err != nil && !errors.As(err, &exit):
		t.Fatalf("uml_mconsole %s %q: %v\n%s", sock, cmd, err, stderr.String())
	}
	return stdout.String(), c.ProcessState.ExitCode()
}

// TestKernel runs the client and the listener against a real UML kernel and
// compares the answers with the reference client uml_mconsole.
func TestKernel(t *testing.T) {
	g := bootGuest(t)

	n, err := g.notify.Receive(g.context(t, 15*time.Second))
	if err != nil {
		t.Fatalf("waiting for the socket notification: %v", err)
	}
	if diff := cmp.Diff(Notification{Type: NotifySocket, Data: g.mconsole}, n); diff != "" {
		t.Fatalf("first notification (-want +got):\n%s", diff)
	}

	c, err := Dial(n.Data)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	t.Run("version", func(t *testing.T) {
		got, err := c.Version(g.context(t, 5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(got, "Linux ") {
			t.Errorf("version %q does not start with \"Linux \"", got)
		}
		// uml_mconsole prints "OK ", the data of every reply, a newline.
		ref, code := reference(t, g.mconsole, "version")
		if diff := cmp.Diff(ref, "OK "+got+"\n"); diff != "" || code != 0 {
			t.Errorf("uml_mconsole version (exit %d) differs (-uml_mconsole +ours):\n%s", code, diff)
		}
	})

	t.Run("help in several replies", func(t *testing.T) {
		got, err := c.Command(g.context(t, 5*time.Second), "help")
		if err != nil {
			t.Fatal(err)
		}
		// One reply carries at most 511 bytes.
		if len(got) <= maxCommand {
			t.Errorf("help is %d bytes, too short to need continuation replies", len(got))
		}
		if !strings.Contains(got, "stack <pid>") {
			t.Errorf("help lacks its last command:\n%s", got)
		}
		// uml_mconsole appends help on its local commands after the
		// kernel's text and its newline.
		ref, code := reference(t, g.mconsole, "help")
		kernelPart, _, found := strings.Cut(ref, "\nAdditional local mconsole commands:")
		if !found || code != 0 {
			t.Fatalf("uml_mconsole help (exit %d) printed no local help:\n%s", code, ref)
		}
		if diff := cmp.Diff(kernelPart, "OK "+got); diff != "" {
			t.Errorf("help differs from uml_mconsole's (-uml_mconsole +ours):\n%s", diff)
		}
	})

	t.Run("unknown command", func(t *testing.T) {
		_, err := c.Command(g.context(t, 5*time.Second), "bogus")
		var ce *CommandError
		if !errors.As(err, &ce) {
			t.Fatalf("error %v, want a *CommandError", err)
		}
		if diff := cmp.Diff(&CommandError{Command: "bogus", Code: 1, Message: "Unknown command"}, ce); diff != "" {
			t.Errorf("error (-want +got):\n%s", diff)
		}
		ref, code := reference(t, g.mconsole, "bogus")
		if diff := cmp.Diff(ref, "ERR "+ce.Message+"\n"); diff != "" || code != 1 {
			t.Errorf("uml_mconsole bogus (exit %d) differs (-uml_mconsole +ours):\n%s", code, diff)
		}
	})

	t.Run("user notification", func(t *testing.T) {
		n, err := g.notify.Receive(g.context(t, 10*time.Second))
		if err != nil {
			t.Fatalf("waiting for READY=1: %v", err)
		}
		if diff := cmp.Diff(Notification{Type: NotifyUser, Data: "READY=1"}, n); diff != "" {
			t.Errorf("notification (-want +got):\n%s", diff)
		}
	})

	// halt answers with an empty reply and then exits at once (no sync).
	t.Run("halt", func(t *testing.T) {
		got, err := c.Command(g.context(t, 5*time.Second), "halt")
		if err != nil || got != "" {
			t.Errorf(`halt = %q, %v; want "", nil`, got, err)
		}
		select {
		case <-g.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("the kernel still runs 5 s after halt")
		}
		if _, err := g.Wait(context.Background()); err != nil {
			t.Errorf("kernel exit after halt: %v, want status 0", err)
		}

		// The kernel is gone: the next command fails at once.
		start := time.Now()
		if _, err := c.Version(context.Background()); err == nil {
			t.Error("version after halt succeeded")
		} else {
			t.Logf("version after halt: %v (after %v)", err, time.Since(start))
		}
		if elapsed := time.Since(start); elapsed > time.Second {
			t.Errorf("version after halt took %v", elapsed)
		}
	})
}
