package main

import (
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// signalHelper is the environment variable that makes the test binary
// wait for signals in interruptible's context.
const signalHelper = "UMLCTL_TEST_SIGNALS"

// TestSecondSignal: the first SIGTERM ends the context, the second ends
// the process, however stuck it is. In a process of its own.
func TestSecondSignal(t *testing.T) {
	if os.Getenv(signalHelper) != "" {
		ctx, stop := interruptible(t.Context())
		defer stop()
		syscall.Kill(os.Getpid(), syscall.SIGTERM)
		<-ctx.Done()
		syscall.Kill(os.Getpid(), syscall.SIGTERM)
		time.Sleep(5 * time.Second) // stuck: only the signal ends it
		os.Exit(0)
	}
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestSecondSignal$")
	cmd.Env = append(os.Environ(), signalHelper+"=1")
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("a process that got two SIGTERMs: %v, want it killed by the second", err)
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Errorf("a process that got two SIGTERMs: %v, want it killed by SIGTERM", err)
	}
}
