package supervisor

import (
	"context"
	"errors"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"umlsd/control"
	"umlsd/mconsole"
)

// freezingKernel answers stop and go as UML's management console does.
type freezingKernel struct {
	frozen bool
	sent   []string
}

func (k *freezingKernel) Command(_ context.Context, cmd string) (string, error) {
	k.sent = append(k.sent, cmd)
	switch {
	case strings.HasPrefix(cmd, "stop") && k.frozen:
		return "", &mconsole.CommandError{Command: cmd, Code: 1, Message: "Already stopped"}
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

// TestFrozenState: the supervisor follows freezing and thawing, however
// they were sent, and refuses to freeze a guest it is stopping.
func TestFrozenState(t *testing.T) {
	fk := &freezingKernel{}
	gs := &guestState{kernel: &kernel{exited: make(chan struct{}), hub: control.NewHub(nil)}, ctl: fk}
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
		if got := frozen(); got != tt.frozen || fk.frozen != tt.frozen {
			t.Errorf("after %q: frozen %v (the kernel: %v), want %v", tt.cmd, got, fk.frozen, tt.frozen)
		}
	}

	gs.Mconsole(t.Context(), "stop")
	gs.booted()
	if frozen() {
		t.Error("frozen after a reboot")
	}
	gs.setFrozen(true)
	if !gs.setStopping() {
		t.Error("setStopping does not say the guest is frozen")
	}
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
