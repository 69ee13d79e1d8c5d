package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"umlsd/internal/testbed"
)

// umlctl runs umlctl in the machine and returns its output and exit status.
func umlctl(t *testing.T, m *testbed.Machine, args ...string) (stdout, stderr string, status int) {
	t.Helper()
	stdout, stderr, err := m.Run(t.Context(), append([]string{"umlctl"}, args...)...)
	if status = exitStatus(err); status < 0 {
		t.Fatalf("umlctl %s: %v", strings.Join(args, " "), err)
	}
	return stdout, stderr, status
}

// mustUmlctl runs umlctl and fails the test unless it exits with want.
func mustUmlctl(t *testing.T, m *testbed.Machine, want int, args ...string) (stdout, stderr string) {
	t.Helper()
	stdout, stderr, status := umlctl(t, m, args...)
	if status != want {
		t.Fatalf("umlctl %s exited %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), status, want, stdout, stderr)
	}
	return stdout, stderr
}

// TestUmlctlGuests: list and status of running, stopped and broken guests;
// start and stop through systemd with failures explained; a merge refused
// while the guest runs, and after it stopped, a merged image that boots
// with what the first guest wrote.
func TestUmlctlGuests(t *testing.T) {
	m := bootWithGuests(t, map[string]string{
		"run":    guestConf("guest.img", readyConsole, ""),
		"idle":   guestConf("guest.img", "", ""),
		"broken": "[Guest]\nRootImage=relative.img\n",
		"nokern": guestConf("guest.img", "Kernel=/usr/bin/no-such-kernel\n", ""),
	})

	mustUmlctl(t, m, 0, "start", "run")
	if got := show(t, m, "uml@run.service", "ActiveState"); got != "active" {
		t.Fatalf("after umlctl start, uml@run.service is %s", got)
	}

	t.Run("list", func(t *testing.T) {
		out, _ := mustUmlctl(t, m, 0, "list", "--json")
		var entries []struct {
			Name       string     `json:"name"`
			State      string     `json:"state"`
			ReadySince *time.Time `json:"ready_since"`
			Memory     uint64     `json:"memory_bytes"`
			Error      string     `json:"error"`
		}
		if err := json.Unmarshal([]byte(out), &entries); err != nil {
			t.Fatalf("umlctl list --json: %v\n%s", err, out)
		}
		got := map[string]string{}
		for _, e := range entries {
			got[e.Name] = e.State
			switch e.Name {
			case "run":
				if e.ReadySince == nil || time.Since(*e.ReadySince) > 10*time.Minute || e.Memory != 64<<20 {
					t.Errorf("running guest listed as %+v", e)
				}
			case "broken":
				if !strings.Contains(e.Error, "/etc/uml/broken.conf:2:") {
					t.Errorf("broken guest's error %q does not name the file and line", e.Error)
				}
			}
		}
		want := map[string]string{"run": "active", "idle": "inactive", "broken": "broken", "nokern": "inactive"}
		for name, state := range want {
			if got[name] != state {
				t.Errorf("umlctl list: %s is %q, want %q\n%s", name, got[name], state, out)
			}
		}
		text, _ := mustUmlctl(t, m, 0, "list")
		if !strings.Contains(text, "broken is broken: /etc/uml/broken.conf:2:") {
			t.Errorf("umlctl list does not explain the broken guest:\n%s", text)
		}
	})

	t.Run("status", func(t *testing.T) {
		out, _ := mustUmlctl(t, m, 0, "status", "run")
		for _, want := range []string{"● run", "uml@run.service: active (running), ready since", "Process: pid ", ", up ", "UMLSD-READY",
			"Kernel: " + projectKernel + ", Linux 6.1."} {
			if !strings.Contains(out, want) {
				t.Errorf("umlctl status run lacks %q:\n%s", want, out)
			}
		}
		if !strings.Contains(out, "Linux") {
			t.Errorf("umlctl status run does not show the kernel's version:\n%s", out)
		}
		out, _ = mustUmlctl(t, m, 3, "status", "idle")
		if !strings.Contains(out, "Process: not running") || !strings.Contains(out, "Kernel: "+projectKernel+", Linux 6.1.") {
			t.Errorf("umlctl status of a stopped guest:\n%s", out)
		}
		_, errOut := mustUmlctl(t, m, 1, "status", "broken")
		if !strings.Contains(errOut, "broken.conf:2: RootImage=relative.img is not an absolute path") {
			t.Errorf("umlctl status of a broken guest says:\n%s", errOut)
		}
		mustUmlctl(t, m, 4, "status", "nope")
	})

	t.Run("start failure explained", func(t *testing.T) {
		_, errOut := mustUmlctl(t, m, 1, "start", "nokern")
		if !strings.Contains(errOut, "start of guest nokern failed: Kernel=/usr/bin/no-such-kernel is not a program file") {
			t.Errorf("umlctl start of a guest without a kernel says:\n%s", errOut)
		}
	})

	const cow = "/var/lib/uml/run/root.cow"
	const merged = imageDir + "/merged.img"
	t.Run("merge refused while the guest runs", func(t *testing.T) {
		_, errOut := mustUmlctl(t, m, 1, "cow", "merge", cow, merged)
		if !strings.Contains(errOut, "in use by process") {
			t.Errorf("umlctl cow merge of a running guest's COW says:\n%s", errOut)
		}
		if _, _, err := m.Run(t.Context(), "test", "-e", merged); err == nil {
			t.Errorf("a refused merge left %s", merged)
		}
	})

	mustUmlctl(t, m, 0, "stop", "run")
	if got := show(t, m, "uml@run.service", "ActiveState"); got != "inactive" {
		t.Fatalf("after umlctl stop, uml@run.service is %s", got)
	}

	t.Run("merged image boots with the guest's writes", func(t *testing.T) {
		mustUmlctl(t, m, 0, "cow", "merge", cow, merged)
		// The reference tool on the same COW, written by a real guest: the
		// same bytes, and no more blocks.
		const reference = "/var/tmp/uml_moo.img"
		m.MustRun(t, "uml_moo", cow, reference)
		if out, _, err := m.Run(t.Context(), "cmp", merged, reference); err != nil {
			t.Errorf("umlctl cow merge and uml_moo differ: %v\n%s", err, out)
		}
		m.MustRun(t, "sync")
		var ours, theirs int
		if _, err := fmt.Sscan(m.MustRun(t, "stat", "-c", "%b", merged, reference), &ours, &theirs); err != nil {
			t.Fatal(err)
		}
		if ours > theirs {
			t.Errorf("umlctl cow merge's image has %d blocks, uml_moo's %d: it is less sparse", ours, theirs)
		}
		t.Logf("blocks of the merged image: umlctl's %d, uml_moo's %d", ours, theirs)
		// umlctl writes the image for root only, as the guest's data may
		// be secret; the new guest's account must read its RootImage.
		m.MustRun(t, "chmod", "0644", merged)
		m.WriteFile(t, "/etc/uml/merged.conf", []byte(guestConf("merged.img", readyConsole, "")), 0o644)
		m.MustRun(t, "systemctl", "daemon-reload")
		mustUmlctl(t, m, 0, "start", "merged")
		// The first guest wrote the file at boot; the merged image has it.
		waitJournal(t, m, "uml@merged.service", "UMLSD-WRITTEN-MARKER: written at boot, not synced")
		mustUmlctl(t, m, 0, "stop", "merged")
	})
}
