package main

import (
	"context"
	"io"
	"testing"

	"umlsd/supervisor"
)

func TestUsage(t *testing.T) {
	for _, args := range [][]string{nil, {"run"}, {"start", "web"}, {"run", "web", "extra"}} {
		if got := supervisor.ExitStatus(run(context.Background(), args, io.Discard)); got != 2 {
			t.Errorf("uml-supervisor %q: exit status %d, want 2", args, got)
		}
	}
}

func TestRunRefusesABadName(t *testing.T) {
	t.Setenv("UMLSD_CONFIG_DIR", t.TempDir())
	t.Setenv("UMLSD_RUNTIME_DIR", t.TempDir())
	err := run(context.Background(), []string{"run", "../etc"}, io.Discard)
	if got := supervisor.ExitStatus(err); got != supervisor.ExitConfig {
		t.Errorf("run ../etc: %v, exit status %d, want %d", err, got, supervisor.ExitConfig)
	}
}
