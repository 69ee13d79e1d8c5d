package umltest

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// gone reports whether process pid has exited: it no longer exists, or is
// a zombie waiting for its parent.
func gone(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	// pid (comm) S ...
	_, rest, _ := strings.Cut(string(stat), ") ")
	return strings.HasPrefix(rest, "Z")
}

// TestKill stands a shell with a child of its own for the kernel: Kill
// ends both, and the console holds what both wrote.
func TestKill(t *testing.T) {
	k := Start(t, exec.Command("sh", "-c", "sleep 600 & echo child $!; echo to stderr >&2; wait"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := k.WaitConsole(ctx, "to stderr"); err != nil {
		t.Fatal(err)
	}
	var child int
	for line := range strings.Lines(k.Console.String()) {
		if s, ok := strings.CutPrefix(strings.TrimSpace(line), "child "); ok {
			child, _ = strconv.Atoi(s)
		}
	}
	if child <= 0 {
		t.Fatalf("no child pid in the console:\n%s", k.Console.String())
	}
	select {
	case <-k.Done():
		t.Fatal("the shell exited before Kill")
	default:
	}

	if err := k.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := k.Kill(); err != nil {
		t.Errorf("second Kill: %v", err)
	}
	state, err := k.Wait(context.Background())
	if state == nil || state.Exited() || err == nil {
		t.Errorf("Wait after Kill = %v, %v; want a state killed by a signal and an error", state, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !gone(child) {
		if time.Now().After(deadline) {
			t.Fatalf("the shell's child %d outlived Kill", child)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestWaitConsole: WaitConsole fails when the process exits without
// showing the text, and when its context ends.
func TestWaitConsole(t *testing.T) {
	k := Start(t, exec.Command("sh", "-c", "echo bye; exit 3"))
	if err := k.WaitConsole(context.Background(), "never"); err == nil || !strings.Contains(err.Error(), "exited") {
		t.Errorf("WaitConsole on an exited process = %v, want an error saying it exited", err)
	}
	if state, _ := k.Wait(context.Background()); state.ExitCode() != 3 {
		t.Errorf("exit status %d, want 3", state.ExitCode())
	}
	if err := k.WaitConsole(context.Background(), "bye"); err != nil {
		t.Errorf("WaitConsole for output already there: %v", err)
	}

	k = Start(t, exec.Command("sleep", "600"))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := k.WaitConsole(ctx, "never"); err == nil {
		t.Error("WaitConsole returned nil for text that never came")
	}
	if state, err := k.Wait(ctx); state != nil || err == nil {
		t.Errorf("Wait after the context ended = %v, %v; want nil and an error", state, err)
	}
}
