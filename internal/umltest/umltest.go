// Package umltest boots bare User-Mode Linux kernels for tests: it starts
// linux.uml on the host, collects its console output and makes sure that
// none of its processes outlives the test. It is for tests only.
package umltest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Buffer collects output written from several goroutines, such as the
// console output that os/exec's copier writes, and when each part came.
type Buffer struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes []write
}

// write is when the output up to end arrived.
type write struct {
	end int
	at  time.Time
}

func (b *Buffer) Write(p []byte) (int, error) {
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	b.writes = append(b.writes, write{b.buf.Len(), now})
	return n, err
}

// Arrived says when the first occurrence of s was complete, if it came.
func (b *Buffer) Arrived(s string) (time.Time, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	i := strings.Index(b.buf.String(), s)
	if i < 0 {
		return time.Time{}, false
	}
	for _, w := range b.writes {
		if w.end >= i+len(s) {
			return w.at, true
		}
	}
	return time.Time{}, false
}

// String returns what has been written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Kernel is a UML kernel started by Start.
type Kernel struct {
	// Console is the kernel's standard output and standard error. It is
	// complete once Done is closed.
	Console *Buffer

	cmd     *exec.Cmd
	done    chan struct{} // closed when the kernel has exited
	waitErr error         // cmd.Wait's, valid after done

	killOnce sync.Once
	killErr  error
}

// BareCommand runs kernel on img as the supervisor would, but bare on the
// host: through a COW file in dir, with its runtime files and memory in
// dir, its management console notifying dir/notify, its first console on
// its standard descriptors, and without address randomisation.
func BareCommand(kernel, img, dir, mem string) *exec.Cmd {
	cmd := exec.Command("setarch", "x86_64", "--addr-no-randomize", kernel, "ubd0="+dir+"/cow,"+img, "root=/dev/ubda",
		"mem="+mem, "umid=bare", "uml_dir="+dir, "mconsole=notify:"+dir+"/notify", "con=null", "ssl=null", "con0=fd:0,fd:1")
	cmd.Env = []string{"TMPDIR=" + dir}
	return cmd
}

// Start starts cmd, a linux.uml command, with its standard input on
// /dev/null and its standard output and standard error in k.Console; it
// overrides those fields of cmd and its SysProcAttr and WaitDelay.
//
// A kernel is several host processes. Start makes the kernel the leader of
// a new process group before exec (its own setsid() then fails, harmlessly),
// so that every helper it forks is in that group; a cleanup of t kills the
// group (see Kill) and, if the test failed, logs the console.
func Start(t testing.TB, cmd *exec.Cmd) *Kernel {
	t.Helper()
	k := &Kernel{Console: &Buffer{}, cmd: cmd, done: make(chan struct{})}
	cmd.Stdin = nil // /dev/null
	cmd.Stdout = k.Console
	cmd.Stderr = k.Console
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		k.waitErr = cmd.Wait()
		close(k.done)
	}()
	t.Cleanup(func() {
		if err := k.Kill(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("console of %s:\n%s", strings.Join(cmd.Args, " "), k.Console.String())
		}
	})
	return k
}

// Pid is the kernel's process id, which is also its process group's.
func (k *Kernel) Pid() int { return k.cmd.Process.Pid }

// Done returns a channel that is closed when the kernel has exited.
func (k *Kernel) Done() <-chan struct{} { return k.done }

// Wait waits for the kernel to exit and returns its process state and what
// (*exec.Cmd).Wait returned: nil for exit status 0. If ctx ends first, it
// returns a nil state and the context's error.
func (k *Kernel) Wait(ctx context.Context) (*os.ProcessState, error) {
	select {
	case <-k.done:
		return k.cmd.ProcessState, k.waitErr
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// WaitConsole waits until the console shows want. It fails if the kernel
// exits first or ctx ends.
func (k *Kernel) WaitConsole(ctx context.Context, want string) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !strings.Contains(k.Console.String(), want) {
		select {
		case <-k.done:
			if strings.Contains(k.Console.String(), want) {
				return nil
			}
			return fmt.Errorf("the kernel exited (%v) before the console showed %q", k.cmd.ProcessState, want)
		case <-ctx.Done():
			return fmt.Errorf("the console did not show %q: %w", want, ctx.Err())
		case <-tick.C:
		}
	}
	return nil
}

// Kill kills the kernel's whole process group, the first time it is
// called, and waits for the kernel to exit. After a halt nothing should be
// left of the group, so a group already gone is no error.
func (k *Kernel) Kill() error {
	k.killOnce.Do(func() {
		pgid := k.cmd.Process.Pid
		if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			k.killErr = fmt.Errorf("killing the kernel's process group %d: %w", pgid, err)
		}
		<-k.done
	})
	return k.killErr
}
