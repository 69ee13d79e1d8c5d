// Package supervisor is uml-supervisor, the main process of
// uml@NAME.service: it checks the guest's configuration and the host,
// builds the jail, starts the kernel unprivileged in it, tells systemd when
// the guest is ready, logs its console to the journal, stops it cleanly,
// and undoes everything it changed on the host, also after a crash (Cleanup).
//
// The kernel runs in its own mount namespace: the jail's mounts exist only
// there and vanish with the kernel's last process. What the supervisor
// creates on the host is recorded under /run/uml/NAME before it is created.
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/coreos/go-systemd/v22/journal"
	"golang.org/x/sys/unix"

	"umlsd/config"
	"umlsd/control"
	"umlsd/internal/printable"
	"umlsd/mconsole"
	"umlsd/netprep"
)

// Exit statuses of uml-supervisor run.
const (
	// ExitOK: the guest was stopped, or powered itself off.
	ExitOK = 0
	// ExitFailure: the start failed (the guest was not ready in time, the
	// jail could not be built, …), or teardown failed.
	ExitFailure = 1
	// ExitPanic: the guest kernel panicked.
	ExitPanic = 3
	// ExitCrash: the kernel was killed by a signal, not by the supervisor.
	ExitCrash = 4
	// ExitGuestStatus: the guest powered off with a non-zero exit code
	// (written to its /proc/exitcode).
	ExitGuestStatus = 5
	// ExitConfig (EX_CONFIG): the configuration or the host is wrong;
	// uml@.service does not restart the guest (RestartPreventExitStatus=).
	ExitConfig = 78
)

// ExitError is a failure with the exit status it calls for.
type ExitError struct {
	Status int
	Err    error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// ExitStatus is the exit status for an error Run or Cleanup returned.
func ExitStatus(err error) int {
	var ee *ExitError
	var ce configError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ee):
		return ee.Status
	case errors.As(err, &ce):
		return ExitConfig
	}
	return ExitFailure
}

// Supervisor runs guests.
type Supervisor struct {
	Loader config.Loader
	// RuntimeDir holds each guest's runtime directory: RuntimeDir on a
	// host, another directory in tests.
	RuntimeDir string
	// Self is this program, which the exec stage runs (/proc/self/exe).
	Self string
	Log  Log
	// Notify sends a state to the service manager (sd_notify); nil when
	// there is none.
	Notify func(state string)
	// Net changes the host's network, and Lookup resolves the host names
	// of firewall rules: nil for the host's own (tests set them).
	Net    HostNetwork
	Lookup netprep.Lookup

	accounts accounts
}

func (s *Supervisor) notify(state string) {
	if s.Notify != nil {
		s.Notify(state)
	}
}

// status sets the unit's status line. The text may come from the guest
// (its version, its STATUS= lines, a panic message): control characters
// are replaced, so that it cannot add a line, and so a setting, to the
// message systemd receives.
func (s *Supervisor) status(format string, args ...any) {
	s.notify("STATUS=" + printable.Line(fmt.Sprintf(format, args...)))
}

func (s *Supervisor) db() accounts {
	if s.accounts == nil {
		return hostAccounts{}
	}
	return s.accounts
}

// Run starts guest name and supervises it until it stops: it returns when
// the kernel has exited (after ctx ends, it stops the guest first) and
// everything on the host is undone.
func (s *Supervisor) Run(ctx context.Context, name string) (err error) {
	defer func() {
		if err != nil {
			s.Log.Event(journal.PriErr, err.Error())
			// systemctl status shows the last status: make it the reason.
			s.status("failed: %v", err)
		}
	}()
	s.status("checking the configuration and the host")
	g, err := s.Loader.Load(name)
	if err != nil {
		return configError{err}
	}
	l := NewLayout(s.RuntimeDir, name)
	var others []*config.Guest
	if set, err := s.Loader.LoadAll(); err == nil {
		others = set.Guests
	}
	p, err := preflight(ctx, s.db(), g, others, l, s.Log, s.lookup())
	if ctx.Err() != nil {
		return nil // stopped before anything started
	}
	if err != nil {
		return err
	}
	st, err := s.claim(ctx, l)
	if err != nil {
		return err
	}
	defer func() {
		if terr := s.release(ctx, l, st); terr != nil {
			s.Log.Event(journal.PriErr, fmt.Sprintf("undoing the host changes: %v", terr))
			if err == nil {
				err = terr
			}
		}
	}()
	gs := &guestState{}
	stopServing, err := s.serveControl(ctx, l, st, gs)
	if err != nil {
		return err
	}
	defer stopServing() // before release, which removes the socket
	if err := ctx.Err(); err != nil {
		return nil // stopped before anything started
	}
	k, err := s.start(ctx, p, st)
	if err != nil {
		return err
	}
	gs.setKernel(k)
	return s.supervise(ctx, p, k, gs)
}

// claim makes the guest's runtime directory and locks its record, after
// undoing what a crashed run left in it.
func (s *Supervisor) claim(ctx context.Context, l Layout) (*stateFile, error) {
	if err := os.MkdirAll(s.RuntimeDir, 0o755); err != nil {
		return nil, fmt.Errorf("making %s: %w", s.RuntimeDir, err)
	}
	if err := os.Mkdir(l.Dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("making %s: %w", l.Dir, err)
	}
	fi, err := os.Lstat(l.Dir)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		return nil, hostErrorf("%s is not a directory of mode 0700; remove it", l.Dir)
	}
	st, err := openState(l.State(), true)
	if errors.Is(err, errLocked) {
		return nil, hostErrorf("guest %s is already running (its supervisor holds %s); stop it with systemctl stop uml@%s.service", l.Name, l.State(), l.Name)
	}
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", l.State(), err)
	}
	rs, err := st.records()
	if err != nil {
		st.close()
		return nil, fmt.Errorf("reading %s: %w", l.State(), err)
	}
	for _, r := range rs {
		if r.Kernel != nil && r.Kernel.alive() {
			st.close()
			return nil, hostErrorf("guest %s is already running without a supervisor (kernel process %d); stop it with uml-supervisor cleanup %s", l.Name, r.Kernel.PID, l.Name)
		}
	}
	if len(rs) > 0 {
		s.Log.Event(journal.PriNotice, "undoing what an earlier run of this guest left behind")
		if err := undo(context.WithoutCancel(ctx), s.net(), rs); err != nil {
			st.close()
			return nil, fmt.Errorf("undoing an earlier run: %w", err)
		}
		if err := st.f.Truncate(0); err != nil {
			st.close()
			return nil, fmt.Errorf("clearing %s: %w", l.State(), err)
		}
	}
	return st, nil
}

// release undoes what st records, then removes the record and the runtime
// directory, unless the directory holds something the supervisor did not
// create, which it leaves and reports.
func (s *Supervisor) release(ctx context.Context, l Layout, st *stateFile) error {
	rs, err := st.records()
	if err == nil {
		// Also when the guest was stopped: undoing is part of stopping.
		ctx := context.WithoutCancel(ctx)
		s.logDrops(ctx, rs)
		err = undo(ctx, s.net(), rs)
	}
	if err != nil {
		st.close()
		return err
	}
	rerr := os.Remove(l.State())
	st.close()
	if rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
		return fmt.Errorf("removing %s: %w", l.State(), rerr)
	}
	if err := os.Remove(l.Dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing %s: %w (it holds files umlsd did not create; look at them and remove the directory)", l.Dir, err)
	}
	return nil
}

// Cleanup undoes what a run of guest name left on the host, from its record:
// after the supervisor was killed at any point, and harmlessly when there is
// nothing to undo. It refuses while a supervisor of the guest runs.
func (s *Supervisor) Cleanup(ctx context.Context, name string) error {
	l := NewLayout(s.RuntimeDir, name)
	if !config.ValidName(name) {
		return configError{fmt.Errorf("%q is not a guest name", name)}
	}
	st, err := openState(l.State(), false)
	switch {
	case errors.Is(err, errLocked):
		return fmt.Errorf("guest %s is running; stop it with systemctl stop uml@%s.service", name, name)
	case errors.Is(err, fs.ErrNotExist):
		// Nothing recorded: at most an empty directory from a run killed
		// before its first record.
		if err := os.Remove(l.Dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("removing %s: %w", l.Dir, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("opening %s: %w", l.State(), err)
	}
	if rs, err := st.records(); err == nil && len(rs) > 0 {
		s.Log.Event(journal.PriNotice, fmt.Sprintf("undoing what the supervisor of %s left behind (%d records)", name, len(rs)))
	}
	return s.release(ctx, l, st)
}

// kernel is a started kernel.
type kernel struct {
	kernelRef
	cmd      *exec.Cmd
	console  *os.File
	hub      *control.Hub // the console's output for umlctl console
	notes    *mconsole.Listener
	exited   chan struct{} // closed when the kernel exited (not yet reaped)
	consoled chan struct{} // closed when the console has been read to its end
}

// start makes the runtime files, the persistent state the guest lacks, and
// starts the kernel.
func (s *Supervisor) start(ctx context.Context, p *plan, st *stateFile) (k *kernel, err error) {
	g, l, acct := p.guest, p.layout, p.account
	if p.stateDir != "" {
		// root's, not the guest's: the guest needs its COW file only, and
		// a directory it owned could hold links for root to follow.
		if err := os.MkdirAll(p.stateDir, 0o711); err != nil {
			return nil, fmt.Errorf("making the guest's state directory: %w", err)
		}
	}
	if p.makeCow {
		if err := makeCow(g.Cow, g.RootImage, acct); err != nil {
			return nil, err
		}
		s.Log.Event(journal.PriNotice, fmt.Sprintf("created COW file %s on %s", g.Cow, g.RootImage))
	}

	var files kernelFiles
	if g.Network != nil {
		s.status("preparing the network")
		tap, err := s.prepareNetwork(ctx, p, st)
		if err != nil {
			return nil, err
		}
		defer tap.File.Close() // the kernel has its own copy
		files.Tap = tap.File
	}

	s.status("preparing the jail")
	if err := st.add(record{Path: l.Notify()}); err != nil {
		return nil, err
	}
	notes, err := mconsole.ListenNotify(l.Notify())
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			notes.Close()
		}
	}()
	// The kernel sends as the guest's user.
	if err := os.Chown(l.Notify(), acct.UID, acct.GID); err != nil {
		return nil, fmt.Errorf("giving the notify socket to the guest's account: %w", err)
	}
	if p.jail.Root != "" {
		if err := st.add(record{Path: p.jail.Root}); err != nil {
			return nil, err
		}
		if err := os.Mkdir(p.jail.Root, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("making the jail's mount point: %w", err)
		}
	}
	master, peer, err := openConsole()
	if err != nil {
		return nil, err
	}
	defer peer.Close() // the kernel has its own copies
	s.status("starting the kernel")
	k = &kernel{kernelRef: kernelRef{layout: l}, console: master, notes: notes, hub: control.NewHub(consoleTerminal{master}),
		exited: make(chan struct{}), consoled: make(chan struct{})}
	// The stage becomes the kernel, same pid and start time: recorded
	// before the kernel runs.
	started := func(pid int) error {
		start, err := processStart(pid)
		if err != nil {
			return fmt.Errorf("reading the start time of the exec stage: %w", err)
		}
		k.proc = proc{PID: pid, Start: start}
		return st.add(record{Kernel: &k.proc})
	}
	spec := stageSpec{Jail: p.jail, UID: acct.UID, GID: acct.GID, Personality: p.personality, Argv: p.argv, Env: p.env}
	k.cmd, err = startStage(s.Self, spec, peer, files, started)
	if err != nil {
		master.Close()
		return nil, err
	}
	s.Log.Event(journal.PriInfo, fmt.Sprintf("started Linux %s (pid %d) as %s: %s", p.release, k.proc.PID, acct.User, strings.Join(p.argv, " ")))
	go func() {
		var info unix.Siginfo
		for {
			// WNOWAIT: the zombie keeps the pid, and so the process group,
			// from being reused until it is reaped.
			err := unix.Waitid(unix.P_PID, k.proc.PID, &info, unix.WEXITED|unix.WNOWAIT, nil)
			if !errors.Is(err, unix.EINTR) {
				break
			}
		}
		close(k.exited)
	}()
	return k, nil
}

// kernelRef reaches a running kernel: its management console and its
// process group.
type kernelRef struct {
	proc   proc
	layout Layout
}

// Command runs a management console command on the kernel.
func (k kernelRef) Command(ctx context.Context, cmd string) (string, error) {
	c, err := dialKernel(k.proc.PID, k.layout)
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.Command(ctx, cmd)
}

// Signal signals the kernel's whole process group, if the kernel is still
// the recorded process.
func (k kernelRef) Signal(sig unix.Signal) error {
	if !k.proc.alive() {
		return unix.ESRCH
	}
	return unix.Kill(-k.proc.PID, sig)
}

// dialKernel connects to the management console of the kernel pid. The
// socket's directory belongs to the guest's user, so the path is walked
// inside the kernel's root one component at a time without following
// symbolic links: a guest that replaces its socket or a directory with a
// link cannot make the supervisor send to a socket of the host. (openat2's
// RESOLVE_IN_ROOT would do it in one call, but container seccomp filters
// such as systemd-nspawn's refuse it.)
func dialKernel(pid int, l Layout) (*mconsole.Client, error) {
	fd, err := unix.Open(procRoot(pid), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening the kernel's root: %w", err)
	}
	parts := strings.Split(strings.TrimPrefix(l.MconsoleInKernel(), "/"), "/")
	for i, part := range parts {
		next, err := unix.Openat(fd, part, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			return nil, fmt.Errorf("finding the kernel's management console %s: %w", l.MconsoleInKernel(), err)
		}
		fd = next
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("finding the kernel's management console: %w", err)
		}
		want := uint32(unix.S_IFDIR)
		if i == len(parts)-1 {
			want = unix.S_IFSOCK
		}
		if st.Mode&unix.S_IFMT != want {
			unix.Close(fd)
			return nil, fmt.Errorf("the kernel's management console %s: %s is not what it should be", l.MconsoleInKernel(), part)
		}
	}
	defer unix.Close(fd)
	return mconsole.Dial(fmt.Sprintf("/proc/self/fd/%d", fd))
}

// guestEvents are what the notification socket tells, sorted for the loop.
type guestEvents struct {
	sockets chan struct{} // a (re)boot: the kernel's mconsole is up
	user    chan string   // what the guest wrote to /proc/mconsole
	mu      sync.Mutex
	panic   string // the last panic message
}

// receive reads the kernel's notifications until ctx ends or the socket
// fails, logging panics, hangs and reboots as they come. It never blocks on
// the loop: a guest that writes much to /proc/mconsole must not delay the
// reboot notification the stop ladder waits for.
func (s *Supervisor) receive(ctx context.Context, k *kernel, ev *guestEvents, gs *guestState) {
	boots, junk := 0, 0
	for {
		n, err := k.notes.Receive(ctx)
		if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			// Only the kernel can send here; a compromised one must not
			// flood the journal.
			if junk++; junk <= 3 {
				s.Log.Event(journal.PriWarning, fmt.Sprintf("ignoring a notification: %v", err))
			}
			continue
		}
		switch n.Type {
		case mconsole.NotifySocket:
			gs.booted()
			if boots++; boots > 1 {
				s.Log.Event(journal.PriNotice, "the guest rebooted")
			}
			select {
			case ev.sockets <- struct{}{}:
			default:
			}
		case mconsole.NotifyPanic:
			ev.mu.Lock()
			ev.panic = strings.TrimSpace(n.Data)
			ev.mu.Unlock()
			s.Log.Event(journal.PriErr, "the guest kernel panicked: "+strings.TrimSpace(n.Data))
		case mconsole.NotifyHang:
			s.Log.Event(journal.PriWarning, "the guest hangs (uml_watchdog)")
		case mconsole.NotifyUser:
			select {
			case ev.user <- n.Data:
			default: // the loop is busy (stopping): what the guest says is moot
			}
		}
	}
}

// supervise waits for the guest to be ready, keeps the watchdog fed, and
// stops the guest when ctx ends; it returns when the kernel has exited.
func (s *Supervisor) supervise(ctx context.Context, p *plan, k *kernel, gs *guestState) error {
	g := p.guest
	pattern := g.Ready.Pattern
	if g.Ready.Kind != config.ReadyConsole {
		pattern = nil
	}
	consoleMatched := make(chan struct{})
	go func() {
		readConsole(k.console, k.hub, s.Log, pattern, consoleMatched)
		close(k.consoled)
	}()
	defer k.notes.Close()
	rctx, stopReceiving := context.WithCancel(context.WithoutCancel(ctx))
	defer stopReceiving()
	ev := &guestEvents{sockets: make(chan struct{}, 1), user: make(chan string, 16)}
	go s.receive(rctx, k, ev, gs)

	var tcpReady <-chan struct{}
	var probe *tcpProbe
	if g.Ready.Kind == config.ReadyTCP {
		probe = probeTCP(rctx, g)
		tcpReady = probe.ready
	}
	var readyTimeout <-chan time.Time
	if !g.ReadyTimeout.Infinite {
		t := time.NewTimer(g.ReadyTimeout.D)
		defer t.Stop()
		readyTimeout = t.C
	}
	switch g.Ready.Kind {
	case config.ReadyConsole:
		s.status("booting; ready when a console line matches %q", g.Ready.Pattern)
	case config.ReadyNotify:
		s.status("booting; ready when the guest writes READY=1 to /proc/mconsole")
	case config.ReadyTCP:
		s.status("booting; ready when %s accepts connections on TCP port %d", g.Network.Addresses[0].Addr(), g.Ready.Port)
	default:
		s.status("booting; ready when the kernel answers on its management console")
	}
	var (
		ready     bool
		kernelUp  bool
		lastErr   error        // why the kernel did not answer, for the timeout's message
		poll      *time.Ticker // asks for the version until the kernel answers
		pollC     <-chan time.Time
		watchdog  *time.Ticker
		watchdogC <-chan time.Time
	)
	defer func() {
		for _, t := range []*time.Ticker{poll, watchdog} {
			if t != nil {
				t.Stop()
			}
		}
	}()
	setReady := func(why string) {
		if ready {
			return
		}
		ready = true
		gs.setReady()
		readyTimeout = nil
		version, _ := k.Command(ctx, "version")
		s.Log.Event(journal.PriNotice, "the guest is ready: "+why)
		s.notify("READY=1")
		s.status("running: %s", strings.TrimSpace(version))
		if interval := s.watchdogInterval(); interval > 0 {
			watchdog = time.NewTicker(interval / 2)
			watchdogC = watchdog.C
		}
	}
	askKernel := func() {
		if lastErr = kernelAnswers(ctx, k); lastErr == nil {
			poll.Stop()
			pollC = nil
			setReady("its kernel answers on the management console")
		}
	}
	for {
		select {
		case <-k.exited:
			return s.finish(k, ev)
		case <-ctx.Done():
			return s.stop(k, ev, gs, g, ready, "stopping")
		case <-readyTimeout:
			why := ""
			switch {
			case probe != nil && probe.lastErr() != nil:
				why = fmt.Sprintf(" (connecting: %v)", probe.lastErr())
			case lastErr != nil:
				why = fmt.Sprintf(" (its management console: %v)", lastErr)
			case !kernelUp:
				why = " (the kernel never announced its management console)"
			}
			err := fmt.Errorf("the guest was not ready within ReadyTimeout=%s (Ready=%s)%s", g.ReadyTimeout, g.Ready, why)
			s.Log.Event(journal.PriErr, err.Error()+"; stopping it")
			if serr := s.stop(k, ev, gs, g, false, "not ready in time; stopping"); serr != nil {
				return errors.Join(err, serr)
			}
			return err
		case <-ev.sockets:
			if !kernelUp {
				kernelUp = true
				if g.Ready.Kind == config.ReadyKernel {
					poll = time.NewTicker(100 * time.Millisecond)
					pollC = poll.C
					askKernel()
				}
			}
		case <-pollC:
			askKernel()
		case <-tcpReady:
			tcpReady = nil
			setReady(fmt.Sprintf("it accepts connections on TCP port %d", g.Ready.Port))
		case <-consoleMatched:
			consoleMatched = nil
			setReady(fmt.Sprintf("a console line matched %q", g.Ready.Pattern))
		case data := <-ev.user:
			for _, line := range strings.Split(data, "\n") {
				switch {
				case line == "READY=1" && g.Ready.Kind == config.ReadyNotify:
					setReady("it wrote READY=1")
				case strings.HasPrefix(line, "STATUS="):
					s.status("guest: %s", strings.TrimPrefix(line, "STATUS="))
				}
			}
		case <-watchdogC:
			if kernelAnswers(ctx, k) == nil {
				s.notify("WATCHDOG=1")
			}
		}
	}
}

// stop runs the stop ladder on the kernel and reaps it. A guest that is not
// ready yet is not asked to shut down: before its init takes Ctrl-Alt-Del
// over, cad reboots the kernel at once.
func (s *Supervisor) stop(k *kernel, ev *guestEvents, gs *guestState, g *config.Guest, ready bool, what string) error {
	s.notify("STOPPING=1")
	select {
	case <-k.exited: // it ended on its own first
		return s.finish(k, ev)
	default:
	}
	// A frozen guest would not shut down on cad.
	s.thawForStop(k, gs)
	step, err := stopKernel(context.Background(), k, k.exited, ev.sockets, defaultLadder(g.StopTimeout), ready,
		func(step string) { s.status("%s: %s", what, step) })
	if err != nil {
		return err // the kernel survived SIGKILL: reaping it would hang
	}
	outcome := s.finish(k, ev)
	switch {
	case step == stoppedByShutdown && outcome != nil:
		s.Log.Event(journal.PriWarning, fmt.Sprintf("stopped: the guest did not shut down cleanly: %v", outcome))
	case step == stoppedByShutdown:
		s.Log.Event(journal.PriNotice, "stopped: "+step.String())
	default:
		s.Log.Event(journal.PriWarning, "stopped: "+step.String())
	}
	return nil
}

// kernelAnswers asks the kernel for its version on its management console,
// with a short timeout.
func kernelAnswers(ctx context.Context, k *kernel) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, err := k.Command(ctx, "version")
	return err
}

// watchdogInterval is the unit's WatchdogSec=, 0 without one.
func (s *Supervisor) watchdogInterval() time.Duration {
	if s.Notify == nil {
		return 0
	}
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		return 0
	}
	return d
}

// finish reaps the kernel once it has exited, with whatever of its process
// group is left, reads its console to the end, and says how it ended: nil
// for a poweroff.
func (s *Supervisor) finish(k *kernel, ev *guestEvents) error {
	// A kernel whose main process died leaves its helpers running.
	_ = unix.Kill(-k.proc.PID, unix.SIGKILL)
	_ = k.cmd.Wait()
	select {
	case <-k.consoled:
	case <-time.After(2 * time.Second):
	}
	k.console.Close()
	outcome := s.outcome(k, ev)
	if outcome == nil {
		k.hub.Close("the guest powered off; the console session ended")
	} else {
		k.hub.Close("the guest's kernel exited (" + outcome.Error() + "); the console session ended")
	}
	return outcome
}

// outcome says how the reaped kernel ended: nil for a poweroff.
func (s *Supervisor) outcome(k *kernel, ev *guestEvents) error {
	ws := k.cmd.ProcessState.Sys().(syscall.WaitStatus)
	aborted := ws.Signaled() && ws.Signal() == syscall.SIGABRT
	panicMsg := ev.panicMessage()
	// The panic notification may still be on its way.
	for deadline := time.Now().Add(500 * time.Millisecond); aborted && panicMsg == "" && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		panicMsg = ev.panicMessage()
	}
	switch {
	case panicMsg != "" || aborted:
		if panicMsg == "" {
			panicMsg = "see the console lines before this"
		}
		return &ExitError{ExitPanic, fmt.Errorf("the guest kernel panicked: %s", panicMsg)}
	case ws.Signaled():
		return &ExitError{ExitCrash, fmt.Errorf("the kernel was killed by signal %s", unix.SignalName(ws.Signal()))}
	case ws.ExitStatus() != 0:
		return &ExitError{ExitGuestStatus, fmt.Errorf("the kernel exited with status %d (the guest's exit code, or 1 if someone else sent it SIGTERM or SIGINT)", ws.ExitStatus())}
	}
	s.Log.Event(journal.PriNotice, "the guest powered off")
	return nil
}

func (ev *guestEvents) panicMessage() string {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	return ev.panic
}
