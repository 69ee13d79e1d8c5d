package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"umlsd/config"
)

// fakeSystemd answers from a table of unit states and records jobs.
type fakeSystemd struct {
	units map[string]unitState
	// results is each job's result by verb; "done" if missing. A result
	// may change the unit's state through after.
	results map[string]string
	after   map[string]unitState
	jobs    []string
}

func (f *fakeSystemd) Unit(_ context.Context, unit string) (unitState, error) {
	if u, ok := f.units[unit]; ok {
		return u, nil
	}
	return unitState{LoadState: "loaded", ActiveState: "inactive", SubState: "dead"}, nil
}

func (f *fakeSystemd) Job(_ context.Context, verb, unit string, wait bool) (string, error) {
	f.jobs = append(f.jobs, fmt.Sprintf("%s %s wait=%v", verb, unit, wait))
	if !wait {
		return "queued", nil
	}
	if u, ok := f.after[verb]; ok {
		f.units[unit] = u
	}
	if r, ok := f.results[verb]; ok {
		return r, nil
	}
	return "done", nil
}

func (f *fakeSystemd) Close() {}

// testNow is the clock of every test Env.
var testNow = time.Date(2026, 11, 22, 10, 30, 0, 0, time.UTC)

// newTestEnv is an Env on a temporary configuration directory holding
// configs (name → file contents) and a fake systemd.
func newTestEnv(t *testing.T, configs map[string]string, sd *fakeSystemd) *Env {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range configs {
		if err := os.WriteFile(filepath.Join(dir, name+".conf"), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return &Env{
		Stdin:      bytes.NewReader(nil),
		Stdout:     new(bytes.Buffer),
		Stderr:     new(bytes.Buffer),
		ConfigDir:  dir,
		RuntimeDir: t.TempDir(),
		Now:        func() time.Time { return testNow },
		Systemd:    func(context.Context) (systemd, error) { return sd, nil },
		Kernel: func(context.Context, string) (kernelInfo, error) {
			return kernelInfo{}, errNotRunning
		},
		Traffic: func(context.Context, *config.Guest) (traffic, error) {
			return traffic{}, errors.New("no traffic in this test")
		},
		ConsoleLog:    func(context.Context, string, int) ([]string, error) { return []string{}, nil },
		DefaultKernel: "/usr/libexec/umlsd/linux",
		KernelRelease: func(path string) (string, error) {
			switch path {
			case "/usr/libexec/umlsd/linux":
				return "6.1.192-umlsd", nil
			case "/usr/bin/linux.uml":
				return "6.1.176", nil
			}
			return "", &fs.PathError{Op: "open", Path: path, Err: fs.ErrNotExist}
		},
	}
}

// runCLI runs umlctl with args in env and returns what it printed and its
// exit status, with the configuration directory's path replaced by
// /etc/uml so that output is stable.
func runCLI(t *testing.T, env *Env, args ...string) (stdout, stderr string, status int) {
	t.Helper()
	env.Stdout.(*bytes.Buffer).Reset()
	env.Stderr.(*bytes.Buffer).Reset()
	err := Run(context.Background(), args, env)
	clean := func(s string) string {
		return string(bytes.ReplaceAll([]byte(s), []byte(env.ConfigDir), []byte("/etc/uml")))
	}
	return clean(env.Stdout.(*bytes.Buffer).String()), clean(env.Stderr.(*bytes.Buffer).String()), ExitStatus(err)
}
