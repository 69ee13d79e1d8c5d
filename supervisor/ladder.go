package supervisor

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"umlsd/config"
)

// guestControl is what stopping a guest needs from its kernel: management
// console commands and signals to its process group. An interface so that
// the ladder is tested against fake kernels that cooperate, ignore cad,
// reboot on it, or die.
type guestControl interface {
	Command(ctx context.Context, cmd string) (string, error)
	Signal(sig unix.Signal) error
}

// ladderTiming is how long each step of the stop ladder waits.
type ladderTiming struct {
	Shutdown time.Duration // after cad: the guest's StopTimeout= (or forever)
	Sync     time.Duration // after sysrq s and u, which run asynchronously
	Halt     time.Duration // after halt
	Term     time.Duration // after SIGTERM
	Kill     time.Duration // after SIGKILL
	Command  time.Duration // for each management console command
}

// forever is a wait without a limit.
const forever time.Duration = -1

func defaultLadder(stopTimeout config.Timespan) ladderTiming {
	shutdown := stopTimeout.D
	if stopTimeout.Infinite {
		shutdown = forever
	}
	return ladderTiming{
		Shutdown: shutdown,
		Sync:     time.Second,
		Halt:     3 * time.Second,
		Term:     2 * time.Second,
		Kill:     5 * time.Second,
		Command:  2 * time.Second,
	}
}

// stopStep is the step of the stop ladder that ended the kernel.
type stopStep int

const (
	stoppedByShutdown stopStep = iota // cad: the guest shut itself down
	stoppedByHalt                     // sysrq s, u, then halt: synced, not shut down
	stoppedByTerm                     // SIGTERM: no sync
	stoppedByKill                     // SIGKILL of the process group
)

func (s stopStep) String() string {
	return [...]string{
		"the guest shut down cleanly",
		"the guest did not shut down; its disks were synced and remounted read-only, then the kernel was halted",
		"the kernel did not halt and was terminated without a sync",
		"the kernel did not terminate and was killed",
	}[s]
}

// stopKernel runs the stop ladder (uml-facts.md, "Clean shutdown"): ask the
// guest to shut down (mconsole cad, which a guest init turns into a
// poweroff) and wait; if it rebooted instead or did not stop, sync and
// remount its disks read-only and halt it; then SIGTERM, then SIGKILL of
// the kernel's process group. exited is closed when the kernel has exited;
// rebooted receives when the kernel announces a new boot. ask says whether
// to ask the guest first. status reports each step as it starts. ctx
// bounds the whole ladder: it must not be the context whose end asked for
// the stop.
func stopKernel(ctx context.Context, k guestControl, exited <-chan struct{}, rebooted <-chan struct{}, t ladderTiming, ask bool, status func(string)) (stopStep, error) {
	gone := func() bool {
		select {
		case <-exited:
			return true
		default:
			return false
		}
	}
	// A kernel that exits during a command never answers it: a command
	// that failed may still have worked.
	command := func(cmd string) bool {
		cctx, cancel := context.WithTimeout(ctx, t.Command)
		defer cancel()
		_, err := k.Command(cctx, cmd)
		return err == nil || gone()
	}
	wait := func(d time.Duration, onReboot bool) bool {
		var expired <-chan time.Time
		if d != forever {
			timer := time.NewTimer(d)
			defer timer.Stop()
			expired = timer.C
		}
		for {
			select {
			case <-exited:
				return true
			case <-rebooted:
				if onReboot {
					return false
				}
			case <-expired:
				return false
			case <-ctx.Done():
				return false
			}
		}
	}

	if ask {
		// A boot announced before now is not a reboot after cad.
		for drained := false; !drained; {
			select {
			case <-rebooted:
			default:
				drained = true
			}
		}
		status("asking the guest to shut down (Ctrl-Alt-Del)")
		if command("cad") && wait(t.Shutdown, true) || gone() {
			return stoppedByShutdown, nil
		}
	}
	status("syncing the guest's disks and halting it")
	if command("sysrq s") && command("sysrq u") {
		wait(t.Sync, false)
	}
	if command("halt") && wait(t.Halt, false) || gone() {
		return stoppedByHalt, nil
	}
	status("terminating the kernel")
	if k.Signal(unix.SIGTERM) == nil && wait(t.Term, false) || gone() {
		return stoppedByTerm, nil
	}
	status("killing the kernel")
	if err := k.Signal(unix.SIGKILL); err != nil {
		return stoppedByKill, fmt.Errorf("killing the kernel: %w", err)
	}
	if !wait(t.Kill, false) {
		return stoppedByKill, fmt.Errorf("the kernel is still running %v after SIGKILL", t.Kill)
	}
	return stoppedByKill, nil
}
