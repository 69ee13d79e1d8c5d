package cli

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestHostKernel(t *testing.T) {
	env, f := testEnv(t)
	ask := hostKernel(env.RuntimeDir)
	got, err := ask(t.Context(), "g")
	if err != nil {
		t.Fatal(err)
	}
	want := kernelInfo{PID: 1, Version: "Linux 6.1.176 #1 SMP", Uptime: 12270.5, Boots: 2, Ready: true}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("kernel of a running guest (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"version", "proc uptime"}, f.commands); diff != "" {
		t.Errorf("mconsole commands sent (-want +got):\n%s", diff)
	}
	if _, err := ask(t.Context(), "idle"); !errors.Is(err, errNotRunning) {
		t.Errorf("kernel of a guest without a supervisor: %v, want errNotRunning", err)
	}
}
