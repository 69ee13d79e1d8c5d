package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"umlsd/netprep"
)

// crashedRun leaves what a supervisor killed at once would: a runtime
// directory with a record naming a file, a directory and a process group.
func crashedRun(t *testing.T, root, name string, kernel *exec.Cmd) Layout {
	t.Helper()
	l := NewLayout(root, name)
	if err := os.MkdirAll(l.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	st, err := openState(l.State(), true)
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	for _, r := range []record{{Path: l.Notify()}, {Path: l.Jail()}} {
		if err := st.add(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(l.Notify(), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(l.Jail(), 0o700); err != nil {
		t.Fatal(err)
	}
	if kernel != nil {
		start, err := processStart(kernel.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.add(record{Kernel: &proc{PID: kernel.Process.Pid, Start: start}}); err != nil {
			t.Fatal(err)
		}
	}
	// A record cut short by the crash.
	if _, err := st.f.WriteString(`{"path":"/etc/pass`); err != nil {
		t.Fatal(err)
	}
	return l
}

// groupLeader starts a process that leads its own process group, with a
// child in it, as a kernel does.
func groupLeader(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sh", "-c", "sleep 60 & sleep 60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	})
	return cmd
}

func TestCleanup(t *testing.T) {
	root := t.TempDir()
	s := &Supervisor{RuntimeDir: root, Log: discardLog{}}
	kernel := groupLeader(t)
	l := crashedRun(t, root, "web", kernel)

	if err := s.Cleanup(context.Background(), "web"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(l.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s is still there: %v", l.Dir, err)
	}
	// The whole group was killed: the leader (reaped here), and its child
	// (reaped by init, which may take a moment).
	if err := kernel.Wait(); err == nil || kernel.ProcessState.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("the recorded kernel ended with %v, want SIGKILL", err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for syscall.Kill(-kernel.Process.Pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("process group %d survived cleanup", kernel.Process.Pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Again, with nothing to do.
	if err := s.Cleanup(context.Background(), "web"); err != nil {
		t.Errorf("second cleanup: %v", err)
	}
}

func TestCleanupNeverKillsAReusedPID(t *testing.T) {
	root := t.TempDir()
	s := &Supervisor{RuntimeDir: root, Log: discardLog{}}
	other := groupLeader(t)
	l := crashedRun(t, root, "web", nil)
	// The record names the pid, but with another start time: the process
	// the pid now belongs to is not the kernel.
	st, err := openState(l.State(), false)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.add(record{Kernel: &proc{PID: other.Process.Pid, Start: 1}}); err != nil {
		t.Fatal(err)
	}
	st.close()
	if err := s.Cleanup(context.Background(), "web"); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(other.Process.Pid, 0); err != nil {
		t.Errorf("cleanup killed process %d, which is not the recorded kernel: %v", other.Process.Pid, err)
	}
}

func TestCleanupRefusesWhileRunning(t *testing.T) {
	root := t.TempDir()
	s := &Supervisor{RuntimeDir: root, Log: discardLog{}}
	l := crashedRun(t, root, "web", nil)
	st, err := openState(l.State(), false) // a live supervisor's lock
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	err = s.Cleanup(context.Background(), "web")
	if err == nil || !strings.Contains(err.Error(), "is running") {
		t.Fatalf("cleanup while locked: %v, want a refusal", err)
	}
	if _, err := os.Stat(l.Jail()); err != nil {
		t.Errorf("cleanup removed %s of a running guest: %v", l.Jail(), err)
	}
}

func TestCleanupLeavesWhatItDidNotCreate(t *testing.T) {
	root := t.TempDir()
	s := &Supervisor{RuntimeDir: root, Log: discardLog{}}
	l := crashedRun(t, root, "web", nil)
	foreign := filepath.Join(l.Dir, "notes.txt")
	if err := os.WriteFile(foreign, []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := s.Cleanup(context.Background(), "web")
	if err == nil || !strings.Contains(err.Error(), "did not create") {
		t.Errorf("cleanup: %v, want an error saying the directory holds foreign files", err)
	}
	if _, err := os.Stat(foreign); err != nil {
		t.Errorf("cleanup removed %s: %v", foreign, err)
	}
	if _, err := os.Stat(l.Jail()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cleanup left its own %s: %v", l.Jail(), err)
	}
}

func TestCleanupOfNothing(t *testing.T) {
	s := &Supervisor{RuntimeDir: t.TempDir(), Log: discardLog{}}
	if err := s.Cleanup(context.Background(), "web"); err != nil {
		t.Errorf("cleanup with nothing to do: %v", err)
	}
	if err := s.Cleanup(context.Background(), "../etc"); ExitStatus(err) != ExitConfig {
		t.Errorf("cleanup of a bad name: %v, want a configuration error", err)
	}
}

// fakeNetwork records what is asked of the host's network.
type fakeNetwork struct {
	calls      []string
	tapIsStuck bool // DeleteTap fails
}

func (f *fakeNetwork) Apply(_ context.Context, guest string, _ netprep.RuleSet) error {
	f.calls = append(f.calls, "apply "+guest)
	return nil
}

func (f *fakeNetwork) Teardown(_ context.Context, guest string) error {
	f.calls = append(f.calls, "teardown "+guest)
	return nil
}

func (f *fakeNetwork) OpenTap(name, bridge string) (*netprep.Tap, error) {
	return nil, errors.New("no taps here")
}

func (f *fakeNetwork) Drops(_ context.Context, guest string) (netprep.Drops, error) {
	f.calls = append(f.calls, "drops "+guest)
	return netprep.Drops{}, nil
}

func (f *fakeNetwork) DeleteTap(name string, index int) error {
	f.calls = append(f.calls, fmt.Sprintf("delete tap %s %d", name, index))
	if f.tapIsStuck {
		return errors.New("stuck")
	}
	return nil
}

// TestCleanupUndoesTheNetwork: after a crash, the tap that was made is
// deleted (by name and index: never another interface of that name), then
// the firewall is torn down; a tap recorded but never made is left alone;
// a tap that cannot be deleted keeps its firewall.
func TestCleanupUndoesTheNetwork(t *testing.T) {
	for _, tc := range []struct {
		name    string
		records []record
		want    []string
		stuck   bool
	}{
		{"tap cannot be deleted", []record{{Firewall: "web"}, {Tap: &tapRecord{Name: "uml-web", Index: 7}}},
			[]string{"drops web", "delete tap uml-web 7"}, true},
		{"tap made", []record{{Firewall: "web"}, {Tap: &tapRecord{Name: "uml-web"}}, {Tap: &tapRecord{Name: "uml-web", Index: 7}}},
			[]string{"drops web", "delete tap uml-web 7", "teardown web"}, false},
		{"crashed opening the tap", []record{{Firewall: "web"}, {Tap: &tapRecord{Name: "uml-web"}}},
			[]string{"drops web", "teardown web"}, false},
		{"crashed in the firewall", []record{{Firewall: "web"}}, []string{"drops web", "teardown web"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			hn := &fakeNetwork{tapIsStuck: tc.stuck}
			s := &Supervisor{RuntimeDir: root, Log: discardLog{}, Net: hn}
			l := NewLayout(root, "web")
			if err := os.MkdirAll(l.Dir, 0o700); err != nil {
				t.Fatal(err)
			}
			st, err := openState(l.State(), true)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range tc.records {
				if err := st.add(r); err != nil {
					t.Fatal(err)
				}
			}
			st.close()
			err = s.Cleanup(t.Context(), "web")
			if (err != nil) != tc.stuck {
				t.Fatalf("Cleanup: %v", err)
			}
			if diff := cmp.Diff(tc.want, hn.calls); diff != "" {
				t.Errorf("network calls (-want +got):\n%s", diff)
			}
		})
	}
}
