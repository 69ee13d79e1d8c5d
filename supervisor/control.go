package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
	"golang.org/x/sys/unix"

	"umlsd/control"
	"umlsd/mconsole"
)

// guestState is what the control socket reports and acts on, shared by
// the supervisor's loop and the control server.
type guestState struct {
	mu       sync.Mutex
	kernel   *kernel      // nil until the kernel has started
	ctl      guestControl // the kernel's management console (kernel, or a fake)
	started  time.Time
	ready    bool
	boots    int
	frozen   bool
	stopping bool
}

func (g *guestState) setKernel(k *kernel) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.kernel, g.ctl, g.started = k, k, time.Now()
}

func (g *guestState) setReady() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.ready = true
}

// booted counts a boot: a rebooted kernel is not frozen.
func (g *guestState) booted() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.boots++
	g.frozen = false
}

// setStopping marks the guest as being stopped, and says whether it is
// frozen.
func (g *guestState) setStopping() (frozen bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.stopping = true
	return g.frozen
}

func (g *guestState) setFrozen(frozen bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.frozen = frozen
}

func (g *guestState) running() *kernel {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.kernel == nil {
		return nil
	}
	select {
	case <-g.kernel.exited:
		return nil
	default:
		return g.kernel
	}
}

// Status is control.Handler's.
func (g *guestState) Status(context.Context) (control.Status, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	st := control.Status{Started: g.started, Ready: g.ready, Boots: g.boots, Frozen: g.frozen, Stopping: g.stopping}
	if g.kernel != nil {
		st.KernelPID = g.kernel.proc.PID
		st.ConsoleAttached = g.kernel.hub.Attached()
	}
	return st, nil
}

// Console is control.Handler's.
func (g *guestState) Console() (*control.Hub, error) {
	k := g.running()
	if k == nil {
		return nil, control.ErrNotRunning
	}
	return k.hub, nil
}

// Mconsole is control.Handler's. It follows the kernel's freezing: the
// kernel matches a command by prefix, so "stop" and "go" are recognised
// the same way.
func (g *guestState) Mconsole(ctx context.Context, cmd string) (string, error) {
	if g.running() == nil {
		return "", control.ErrNotRunning
	}
	freeze, thaw := strings.HasPrefix(cmd, "stop"), strings.HasPrefix(cmd, "go")
	g.mu.Lock()
	stopping := g.stopping
	g.mu.Unlock()
	if freeze && stopping {
		// A frozen guest cannot shut down: the stop ladder would wait
		// StopTimeout= in vain.
		return "", errors.New("the guest is being stopped and cannot be frozen now")
	}
	reply, err := g.ctl.Command(ctx, cmd)
	var ce *mconsole.CommandError
	switch {
	case err == nil && (freeze || thaw):
		g.setFrozen(freeze)
	case errors.As(err, &ce) && freeze:
		// "Already stopped": it is frozen, whoever froze it.
		g.setFrozen(true)
	case errors.As(err, &ce) && thaw:
		g.setFrozen(false) // "Not stopped"
	}
	return reply, err
}

// thawForStop lets a frozen guest run again, so that it can shut down.
func (s *Supervisor) thawForStop(k *kernel, gs *guestState) {
	if !gs.setStopping() {
		return
	}
	s.Log.Event(journal.PriNotice, "letting the frozen guest run again (mconsole go), so that it can shut down")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := k.Command(ctx, "go"); err != nil {
		s.Log.Event(journal.PriWarning, fmt.Sprintf("thawing the guest: %v", err))
		return
	}
	gs.setFrozen(false)
}

// serveControl makes the guest's control socket, recorded first, and
// serves it until the returned function is called.
func (s *Supervisor) serveControl(ctx context.Context, l Layout, st *stateFile, gs *guestState) (stop func(), err error) {
	if err := st.add(record{Path: l.Control()}); err != nil {
		return nil, err
	}
	ln, err := control.Listen(l.Control())
	if err != nil {
		return nil, err
	}
	srv := &control.Server{
		Handler: gs,
		Log:     func(msg string) { s.Log.Event(journal.PriWarning, msg) },
	}
	// Served through the stop ladder too: the console shows the shutdown.
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ctx, ln); err != nil {
			s.Log.Event(journal.PriWarning, err.Error())
		}
	}()
	return func() { cancel(); <-done }, nil
}

// consoleTerminal is the console's pty master as the hub drives it.
type consoleTerminal struct{ master *os.File }

// inputTimeout bounds a write of console input: a guest that does not read
// its console (frozen) loses the input rather than holding up the client.
const inputTimeout = 5 * time.Second

func (t consoleTerminal) Write(p []byte) (int, error) {
	_ = t.master.SetWriteDeadline(time.Now().Add(inputTimeout))
	return t.master.Write(p)
}

// SetSize sets the window size on the pty; the kernel's winch helper passes
// it on to the guest's console. Through SyscallConn: Fd would make the
// master blocking, and readConsole's deadlines would stop working.
func (t consoleTerminal) SetSize(rows, cols uint16) error {
	rc, err := t.master.SyscallConn()
	if err != nil {
		return err
	}
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		ierr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols})
	}); err != nil {
		return err
	}
	if ierr != nil {
		return fmt.Errorf("setting the console's window size: %w", ierr)
	}
	return nil
}
