package supervisor

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// fakeKernel plays a kernel for the stop ladder. It exits on the commands
// and signals in exitOn, announces a reboot on those in rebootOn, ignores
// the rest, and records everything it was sent. unreachable makes every
// command fail, as when the management console is not up yet.
type fakeKernel struct {
	exitOn, rebootOn []string
	unreachable      bool

	mu       sync.Mutex
	got      []string
	exited   chan struct{}
	rebooted chan struct{}
}

func newFakeKernel(exitOn, rebootOn []string) *fakeKernel {
	return &fakeKernel{exitOn: exitOn, rebootOn: rebootOn, exited: make(chan struct{}), rebooted: make(chan struct{}, 1)}
}

func (k *fakeKernel) act(what string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.got = append(k.got, what)
	switch {
	case slices.Contains(k.exitOn, what):
		select {
		case <-k.exited:
		default:
			close(k.exited)
		}
	case slices.Contains(k.rebootOn, what):
		k.rebooted <- struct{}{}
	}
}

func (k *fakeKernel) sent() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.got)
}

func (k *fakeKernel) Command(ctx context.Context, cmd string) (string, error) {
	if k.unreachable {
		k.act("unreachable " + cmd)
		return "", errors.New("no management console")
	}
	k.act(cmd)
	return "", nil
}

func (k *fakeKernel) Signal(sig unix.Signal) error {
	k.act(unix.SignalName(sig))
	return nil
}

func TestStopKernel(t *testing.T) {
	// A wait the ladder must sit out is short; one it must not (the kernel
	// already reacted, or cannot) is an hour, so that sitting it out fails
	// the test instead of only slowing it down.
	const short, never = time.Millisecond, time.Hour
	ladder := []string{"cad", "sysrq s", "sysrq u", "halt", "SIGTERM", "SIGKILL"}
	tests := []struct {
		name        string
		exitOn      []string
		rebootOn    []string
		unreachable bool
		notAsked    bool // the guest is not ready: no cad
		staleBoot   bool // a boot notification is pending when the ladder starts
		timing      ladderTiming
		want        stopStep
		wantSent    []string
	}{
		{name: "cooperates", exitOn: []string{"cad"},
			timing: ladderTiming{Shutdown: never}, want: stoppedByShutdown, wantSent: ladder[:1]},
		{name: "ignores cad", exitOn: []string{"halt"},
			timing: ladderTiming{Shutdown: short, Halt: never}, want: stoppedByHalt, wantSent: ladder[:4]},
		{name: "reboots on cad", rebootOn: []string{"cad"}, exitOn: []string{"halt"},
			timing: ladderTiming{Shutdown: never, Halt: never}, want: stoppedByHalt, wantSent: ladder[:4]},
		{name: "ignores halt", exitOn: []string{"SIGTERM"},
			timing: ladderTiming{Shutdown: short, Halt: short, Term: never}, want: stoppedByTerm, wantSent: ladder[:5]},
		{name: "ignores SIGTERM", exitOn: []string{"SIGKILL"},
			timing: ladderTiming{Shutdown: short, Halt: short, Term: short, Kill: never}, want: stoppedByKill, wantSent: ladder},
		{name: "not ready yet", notAsked: true, exitOn: []string{"halt"},
			timing: ladderTiming{Shutdown: never, Halt: never}, want: stoppedByHalt, wantSent: ladder[1:4]},
		{name: "boot notified before the stop", staleBoot: true, exitOn: []string{"cad"},
			timing: ladderTiming{Shutdown: never}, want: stoppedByShutdown, wantSent: ladder[:1]},
		{name: "no management console", unreachable: true, exitOn: []string{"SIGTERM"},
			timing: ladderTiming{Shutdown: never, Halt: never, Term: never}, want: stoppedByTerm,
			wantSent: []string{"unreachable cad", "unreachable sysrq s", "unreachable halt", "SIGTERM"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := newFakeKernel(tt.exitOn, tt.rebootOn)
			k.unreachable = tt.unreachable
			if tt.staleBoot {
				k.rebooted <- struct{}{}
			}
			timing := tt.timing
			timing.Sync, timing.Command = short, time.Second
			var steps []string
			type result struct {
				step stopStep
				err  error
			}
			done := make(chan result)
			go func() {
				step, err := stopKernel(context.Background(), k, k.exited, k.rebooted, timing, !tt.notAsked, func(s string) { steps = append(steps, s) })
				done <- result{step, err}
			}()
			var r result
			select {
			case r = <-done:
			case <-time.After(10 * time.Second):
				t.Fatalf("the ladder sat out a wait it should not have; sent so far: %q", k.sent())
			}
			if r.err != nil {
				t.Fatal(r.err)
			}
			if r.step != tt.want {
				t.Errorf("ended by %q, want %q", r.step, tt.want)
			}
			if diff := cmp.Diff(tt.wantSent, k.sent()); diff != "" {
				t.Errorf("sent (-want +got):\n%s", diff)
			}
			if len(steps) == 0 {
				t.Error("no status reported")
			}
		})
	}
}

func TestStopKernelThatNeverDies(t *testing.T) {
	k := newFakeKernel(nil, nil)
	timing := ladderTiming{Shutdown: time.Millisecond, Sync: time.Millisecond, Halt: time.Millisecond,
		Term: time.Millisecond, Kill: 10 * time.Millisecond, Command: time.Second}
	if _, err := stopKernel(context.Background(), k, k.exited, k.rebooted, timing, true, func(string) {}); err == nil {
		t.Error("a kernel that survives SIGKILL: no error")
	}
}

// TestStopKernelWaitsForever: with StopTimeout=infinity the guest gets all
// the time it takes to shut down.
func TestStopKernelWaitsForever(t *testing.T) {
	k := newFakeKernel(nil, nil) // shuts down when the test says so
	timing := ladderTiming{Shutdown: forever, Sync: time.Millisecond, Halt: time.Hour, Term: time.Hour, Kill: time.Hour, Command: time.Second}
	done := make(chan stopStep)
	go func() {
		step, _ := stopKernel(context.Background(), k, k.exited, k.rebooted, timing, true, func(string) {})
		done <- step
	}()
	select {
	case step := <-done:
		t.Fatalf("the ladder ended (%q) while the guest was still shutting down", step)
	case <-time.After(300 * time.Millisecond):
	}
	close(k.exited)
	if step := <-done; step != stoppedByShutdown {
		t.Errorf("ended by %q, want %q", step, stoppedByShutdown)
	}
	if diff := cmp.Diff([]string{"cad"}, k.sent()); diff != "" {
		t.Errorf("sent (-want +got):\n%s", diff)
	}
}
