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
	// freezeMu is held across every freeze and thaw (mconsole stop and
	// go) and across setting stopping, so that no freeze starts once the
	// guest is being stopped and thawForStop's go comes after any freeze.
	freezeMu sync.Mutex

	mu       sync.Mutex
	kernel   *kernel      // nil until the kernel has started
	ctl      guestControl // the kernel's management console (kernel, or a fake)
	started  time.Time
	ready    bool
	boots    int
	frozen   bool
	unknown  bool // a stop or go failed other than by the kernel's refusal
	stopping bool
	// abandon ends the freeze or thaw in flight: thawForStop does not
	// wait for the whole of a client's timeout.
	abandon context.CancelFunc
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
	g.frozen, g.unknown = false, false
}

// setFrozen records the outcome of a stop or go.
func (g *guestState) setFrozen(frozen, unknown bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.frozen, g.unknown = frozen, unknown
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

// Status is control.Handler's. A guest whose last stop or go failed other
// than by the kernel's refusal (its answer did not come in time) may be
// frozen: it is reported Frozen, and FrozenUnknown.
func (g *guestState) Status(context.Context) (control.Status, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	st := control.Status{Started: g.started, Ready: g.ready, Boots: g.boots, Frozen: g.frozen || g.unknown, FrozenUnknown: g.unknown, Stopping: g.stopping}
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

// errStopping refuses a freeze of a guest being stopped.
var errStopping = errors.New("the guest is being stopped, so it cannot be frozen now; a frozen guest could not shut down")

// Mconsole is control.Handler's. It follows the kernel's freezing: the
// kernel matches a command by prefix, so "stop" and "go" are recognised
// the same way.
func (g *guestState) Mconsole(ctx context.Context, cmd string) (string, error) {
	if g.running() == nil {
		return "", control.ErrNotRunning
	}
	freeze, thaw := strings.HasPrefix(cmd, "stop"), strings.HasPrefix(cmd, "go")
	if !freeze && !thaw {
		return g.ctl.Command(ctx, cmd)
	}
	g.freezeMu.Lock()
	defer g.freezeMu.Unlock()
	g.mu.Lock()
	if freeze && g.stopping {
		g.mu.Unlock()
		return "", errStopping
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g.abandon = cancel
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.abandon = nil
		g.mu.Unlock()
	}()

	reply, err := g.ctl.Command(ctx, cmd)
	var ce *mconsole.CommandError
	switch {
	case err == nil:
		g.setFrozen(freeze, false)
	case errors.As(err, &ce):
		// "Already stopped" to a stop, "Not stopped" to a go.
		g.setFrozen(freeze, false)
	default:
		// The kernel may have frozen or thawed without an answer in time.
		g.setFrozen(false, true)
	}
	if err != nil && freeze && ctx.Err() == context.Canceled {
		g.mu.Lock()
		stopping := g.stopping
		g.mu.Unlock()
		if stopping {
			return "", errStopping
		}
	}
	return reply, err
}

// thawGrace bounds thawForStop's go.
const thawGrace = 2 * time.Second

// thawForStop marks the guest as being stopped and lets it run again if it
// is frozen, so that it can shut down. It ends a freeze or thaw in flight,
// waits for it to return, and then sends go whatever the guest is thought
// to be: a freeze whose answer came too late froze the kernel all the
// same. It reports what it did and what failed through log.
func (g *guestState) thawForStop(k guestControl, log func(journal.Priority, string)) {
	g.mu.Lock()
	g.stopping = true // no freeze starts from now on
	if g.abandon != nil {
		g.abandon()
	}
	g.mu.Unlock()
	g.freezeMu.Lock()
	defer g.freezeMu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), thawGrace)
	defer cancel()
	_, err := k.Command(ctx, "go")
	var ce *mconsole.CommandError
	switch {
	case err == nil:
		g.setFrozen(false, false)
		log(journal.PriNotice, "letting the frozen guest run again (mconsole go), so that it can shut down")
	case errors.As(err, &ce): // "Not stopped"
		g.setFrozen(false, false)
	default:
		g.setFrozen(false, true)
		log(journal.PriWarning, fmt.Sprintf("letting the guest run again before stopping it: %v; if it was frozen, it cannot shut down and will be killed", err))
	}
}

// thawForStop lets a frozen guest run again, so that it can shut down.
func (s *Supervisor) thawForStop(k *kernel, gs *guestState) {
	gs.thawForStop(k, s.Log.Event)
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
