package cli

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"umlsd/internal/golden"
)

var testConfigs = map[string]string{
	"dns": `[Guest]
Description=DNS bastion
RootImage=/srv/uml/debian.img
Memory=128M
[Network]
Bridge=br0
Address=192.0.2.53/24
Address=2001:db8::53/64
`,
	"web": `[Guest]
RootImage=/srv/uml/web.img
`,
	"broken": `[Guest]
RootImage=relative.img
`,
}

// transcript is a command's output as a golden file shows it.
func transcript(args []string, stdout, stderr string, status int) string {
	return fmt.Sprintf("$ umlctl %s\n--- stdout\n%s--- stderr\n%s--- exit %d\n", strings.Join(args, " "), stdout, stderr, status)
}

func TestGuestCommands(t *testing.T) {
	running := unitState{
		LoadState: "loaded", ActiveState: "active", SubState: "running",
		ActiveSince: testNow.Add(-3*time.Hour - 25*time.Minute), StatusText: "running: Linux version 6.1.176",
	}
	failed := unitState{
		LoadState: "loaded", ActiveState: "failed", SubState: "failed", Result: "exit-code", ExecMainStatus: 78,
		StatusText: "failed: Kernel=/usr/bin/linux.uml is not a program file; install user-mode-linux or fix Kernel=",
	}
	for _, tc := range []struct {
		name    string
		args    []string
		units   map[string]unitState
		results map[string]string
		after   map[string]unitState
		jobs    []string
	}{
		{name: "list", args: []string{"list"}, units: map[string]unitState{"uml@dns.service": running}},
		{name: "list-json", args: []string{"list", "--json"}, units: map[string]unitState{"uml@dns.service": running}},
		{name: "bare", args: nil, units: map[string]unitState{"uml@web.service": failed}},
		{name: "start", args: []string{"start", "dns"}, jobs: []string{"start uml@dns.service wait=true"}},
		{name: "start-no-block", args: []string{"start", "--no-block", "dns"}, jobs: []string{"start uml@dns.service wait=false"}},
		{
			name: "start-fails", args: []string{"start", "web"},
			results: map[string]string{"start": "failed"}, after: map[string]unitState{"start": failed},
			jobs: []string{"start uml@web.service wait=true"},
		},
		{
			name: "start-fails-silently", args: []string{"start", "web"},
			results: map[string]string{"start": "failed"},
			after:   map[string]unitState{"start": {ActiveState: "failed", Result: "exit-code", ExecMainStatus: 1}},
			jobs:    []string{"start uml@web.service wait=true"},
		},
		{
			name: "start-needs-reload", args: []string{"start", "dns"},
			units: map[string]unitState{"uml@dns.service": {ActiveState: "inactive", NeedDaemonReload: true}},
		},
		{name: "restart", args: []string{"restart", "dns"}, jobs: []string{"restart uml@dns.service wait=true"}},
		{name: "stop", args: []string{"stop", "dns"}, jobs: []string{"stop uml@dns.service wait=true"}},
		{name: "start-broken", args: []string{"start", "broken"}},
		{name: "start-unknown", args: []string{"start", "nope"}},
		{name: "start-bad-name", args: []string{"start", "../x"}},
		{name: "start-no-name", args: []string{"start"}},
		{name: "unknown-verb", args: []string{"frob"}},
		{name: "unknown-flag", args: []string{"list", "--frob"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sd := &fakeSystemd{units: tc.units, results: tc.results, after: tc.after}
			if sd.units == nil {
				sd.units = map[string]unitState{}
			}
			env := newTestEnv(t, testConfigs, sd)
			stdout, stderr, status := runCLI(t, env, tc.args...)
			golden.Check(t, filepath.Join("testdata", tc.name+".golden"), transcript(tc.args, stdout, stderr, status))
			if diff := cmp.Diff(tc.jobs, sd.jobs); diff != "" {
				t.Errorf("systemd jobs (-want +got):\n%s", diff)
			}
		})
	}
}
