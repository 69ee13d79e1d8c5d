package supervisor

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/google/go-cmp/cmp"

	"golang.org/x/sys/unix"

	"umlsd/control"
	"umlsd/mconsole"
)

// freezingKernel answers stop and go as UML's management console does.
type freezingKernel struct {
	// slow: a stop freezes the kernel, but its answer never comes.
	slow bool
	// broken: no command reaches the kernel.
	broken bool
	// stuck receives when a slow stop has frozen the kernel and waits,
	// if not nil.
	stuck chan struct{}

	mu     sync.Mutex
	frozen bool
	sent   []string
}

func (k *freezingKernel) Command(ctx context.Context, cmd string) (string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.broken {
		return "", errors.New("connecting to the management console: connection refused")
	}
	k.sent = append(k.sent, cmd)
	switch {
	case strings.HasPrefix(cmd, "stop") && k.frozen:
		return "", &mconsole.CommandError{Command: cmd, Code: 1, Message: "Already stopped"}
	case strings.HasPrefix(cmd, "stop") && k.slow:
		k.frozen = true
		k.mu.Unlock()
		if k.stuck != nil {
			k.stuck <- struct{}{}
		}
		<-ctx.Done()
		k.mu.Lock()
		return "", fmt.Errorf("waiting for reply to mconsole %q: %w", cmd, ctx.Err())
	case strings.HasPrefix(cmd, "stop"):
		k.frozen = true
		return "stopped", nil
	case strings.HasPrefix(cmd, "go") && !k.frozen:
		return "", &mconsole.CommandError{Command: cmd, Code: 1, Message: "Not stopped"}
	case strings.HasPrefix(cmd, "go"):
		k.frozen = false
		return "", nil
	}
	return "OK", nil
}

func (k *freezingKernel) Signal(unix.Signal) error { return nil }

func (k *freezingKernel) state() (frozen bool, sent []string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.frozen, append([]string(nil), k.sent...)
}

func newGuestState(k guestControl) *guestState {
	return &guestState{kernel: &kernel{exited: make(chan struct{}), hub: control.NewHub(nil)}, ctl: k}
}

// TestFrozenState: the supervisor follows freezing and thawing, however
// they were sent, and refuses to freeze a guest it is stopping.
func TestFrozenState(t *testing.T) {
	fk := &freezingKernel{}
	gs := newGuestState(fk)
	frozen := func() bool {
		st, err := gs.Status(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return st.Frozen
	}
	for _, tt := range []struct {
		cmd     string
		wantErr bool
		frozen  bool
	}{
		{"version", false, false},
		{"stop", false, true},
		{"go", false, false},
		{"go", true, false},
		{"stopnow", false, true}, // the kernel matches by prefix
		{"stop", true, true},     // already stopped: still frozen
		{"goon", false, false},
	} {
		_, err := gs.Mconsole(t.Context(), tt.cmd)
		if (err != nil) != tt.wantErr {
			t.Errorf("%q: error %v, want an error: %v", tt.cmd, err, tt.wantErr)
		}
		if got, kf := frozen(), fk.frozen; got != tt.frozen || kf != tt.frozen {
			t.Errorf("after %q: frozen %v (the kernel: %v), want %v", tt.cmd, got, kf, tt.frozen)
		}
	}

	gs.Mconsole(t.Context(), "stop")
	gs.booted()
	if frozen() {
		t.Error("frozen after a reboot")
	}
	gs.thawForStop(fk, func(journal.Priority, string) {})
	fk.sent = nil
	if _, err := gs.Mconsole(t.Context(), "stop"); err == nil || len(fk.sent) != 0 {
		t.Errorf("freezing a guest being stopped: %v, sent %q; want a refusal", err, fk.sent)
	}

	close(gs.kernel.exited)
	if _, err := gs.Mconsole(t.Context(), "version"); !errors.Is(err, control.ErrNotRunning) {
		t.Errorf("a command after the kernel exited: %v, want ErrNotRunning", err)
	}
	if _, err := gs.Console(); !errors.Is(err, control.ErrNotRunning) {
		t.Errorf("the console after the kernel exited: %v, want ErrNotRunning", err)
	}
}

type logged struct {
	Priority journal.Priority
	Message  string
}

// TestThawForStop: a guest being stopped is let run again whatever the
// supervisor thinks of it, and no freeze slips in once the stop began.
func TestThawForStop(t *testing.T) {
	for _, tt := range []struct {
		name string
		kern *freezingKernel
		// before runs before thawForStop, and returns a function that
		// waits for what it started.
		before      func(t *testing.T, gs *guestState, k *freezingKernel) (wait func())
		wantSent    []string
		wantLog     []logged
		wantUnknown bool
	}{
		{
			name:     "running",
			kern:     &freezingKernel{},
			before:   func(*testing.T, *guestState, *freezingKernel) func() { return func() {} },
			wantSent: []string{"go"},
		},
		{
			name: "frozen",
			kern: &freezingKernel{},
			before: func(t *testing.T, gs *guestState, _ *freezingKernel) func() {
				if _, err := gs.Mconsole(t.Context(), "stop"); err != nil {
					t.Fatal(err)
				}
				return func() {}
			},
			wantSent: []string{"stop", "go"},
			wantLog:  []logged{{journal.PriNotice, "letting the frozen guest run again (mconsole go), so that it can shut down"}},
		},
		{
			name: "frozen by a stop answered too late",
			kern: &freezingKernel{slow: true},
			before: func(t *testing.T, gs *guestState, _ *freezingKernel) func() {
				ctx, cancel := context.WithTimeout(t.Context(), time.Millisecond)
				defer cancel()
				if _, err := gs.Mconsole(ctx, "stop"); !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("a stop without an answer: %v, want a timeout", err)
				}
				st, _ := gs.Status(t.Context())
				if !st.Frozen || !st.FrozenUnknown {
					t.Errorf("after a stop without an answer: frozen %v, unknown %v; want both", st.Frozen, st.FrozenUnknown)
				}
				return func() {}
			},
			wantSent: []string{"stop", "go"},
			wantLog:  []logged{{journal.PriNotice, "letting the frozen guest run again (mconsole go), so that it can shut down"}},
		},
		{
			// A freeze in flight as the stop begins: thawForStop does
			// not wait for the client's minute, and thaws after it.
			name: "a freeze in flight",
			kern: &freezingKernel{slow: true, stuck: make(chan struct{}, 1)},
			before: func(t *testing.T, gs *guestState, k *freezingKernel) func() {
				ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
				done := make(chan error, 1)
				go func() {
					defer cancel()
					_, err := gs.Mconsole(ctx, "stop")
					done <- err
				}()
				<-k.stuck
				return func() {
					select {
					case err := <-done:
						if !errors.Is(err, errStopping) {
							t.Errorf("the freeze in flight: %v, want errStopping", err)
						}
					case <-time.After(5 * time.Second):
						t.Error("the freeze in flight did not end 5 s after the stop began")
					}
				}
			},
			wantSent: []string{"stop", "go"},
			wantLog:  []logged{{journal.PriNotice, "letting the frozen guest run again (mconsole go), so that it can shut down"}},
		},
		{
			name:        "unreachable",
			kern:        &freezingKernel{broken: true},
			before:      func(*testing.T, *guestState, *freezingKernel) func() { return func() {} },
			wantLog:     []logged{{journal.PriWarning, "letting the guest run again before stopping it: connecting to the management console: connection refused; if it was frozen, it cannot shut down and will be killed"}},
			wantUnknown: true,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			gs := newGuestState(tt.kern)
			wait := tt.before(t, gs, tt.kern)
			var log []logged
			done := make(chan struct{})
			go func() {
				defer close(done)
				gs.thawForStop(tt.kern, func(p journal.Priority, msg string) { log = append(log, logged{p, msg}) })
			}()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("thawForStop did not return in 5 s")
			}
			wait()
			frozen, sent := tt.kern.state()
			if frozen {
				t.Error("the kernel is still frozen")
			}
			if diff := cmp.Diff(tt.wantSent, sent); diff != "" {
				t.Errorf("commands sent (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantLog, log); diff != "" {
				t.Errorf("logged (-want +got):\n%s", diff)
			}
			st, _ := gs.Status(t.Context())
			if want := (control.Status{Stopping: true, Frozen: tt.wantUnknown, FrozenUnknown: tt.wantUnknown}); st != want {
				t.Errorf("status %+v, want %+v", st, want)
			}
		})
	}
}
