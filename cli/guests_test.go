package cli

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"umlsd/config"
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
Kernel=/usr/bin/linux.uml
RootImage=/srv/uml/web.img
`,
	"mail": `[Guest]
Kernel=/opt/uml/linux
RootImage=/srv/uml/mail.img
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
		StatusText: "failed: Kernel=/usr/bin/linux.uml is not a program file; install that kernel, or fix Kernel=",
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

func TestStatus(t *testing.T) {
	running := unitState{
		LoadState: "loaded", ActiveState: "active", SubState: "running",
		ActiveSince: testNow.Add(-3*time.Hour - 25*time.Minute), StatusText: "running: Linux version 6.1.176",
	}
	kernel := kernelInfo{PID: 4242, Version: "Linux version 6.1.176 (debian@uml) #1", Uptime: 12270.5, Boots: 2, Ready: true}
	console := []string{"dnsmasq[1]: started, version 2.89", "dns login: "}
	counters := traffic{FromPackets: 120, FromBytes: 14100, ToPackets: 98, ToBytes: 2 << 20, Spoofed: 3, Policy: 17}
	for _, tc := range []struct {
		name    string
		args    []string
		unit    unitState
		kernel  *kernelInfo
		kerr    error
		traffic *traffic
		console []string
	}{
		{name: "status", args: []string{"status", "dns"}, unit: running, kernel: &kernel, traffic: &counters},
		{name: "status-json", args: []string{"status", "--json", "dns"}, unit: running, kernel: &kernel, traffic: &counters},
		{name: "status-frozen", args: []string{"status", "web"}, unit: running, kernel: &kernelInfo{PID: 77, Boots: 1, Frozen: true}},
		{name: "status-frozen-unknown", args: []string{"status", "web"}, unit: running, kernel: &kernelInfo{PID: 77, Boots: 1, Frozen: true, FrozenUnknown: true}},
		{name: "status-stopped", args: []string{"status", "dns"}, unit: unitState{ActiveState: "inactive", SubState: "dead"}},
		{
			name: "status-failed", args: []string{"status", "web"},
			unit: unitState{ActiveState: "failed", SubState: "failed", Result: "watchdog", StatusText: "failed: the kernel stopped answering"},
		},
		{
			name: "status-unreachable", args: []string{"status", "dns"}, unit: running,
			kerr: errors.New("asking the supervisor of dns: no answer within 5s"), traffic: &counters,
		},
		{name: "status-unknown", args: []string{"status", "nope"}},
		{name: "status-no-kernel", args: []string{"status", "mail"}, unit: unitState{ActiveState: "inactive", SubState: "dead"}},
		{
			// What the guest controls (its kernel's answers, its console,
			// its STATUS= lines) reaches the terminal escaped.
			name: "status-hostile", args: []string{"status", "web"},
			unit:    unitState{ActiveState: "active", SubState: "running", StatusText: "guest: ok\x1b]52;c;aGk=\x07"},
			kernel:  &kernelInfo{PID: 77, Boots: 1, Version: "Linux\x1b[2K\rFROZEN"},
			console: []string{"\x1b[1A\x1b[2K● web - forged", "bidi \u202e"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sd := &fakeSystemd{units: map[string]unitState{"uml@dns.service": tc.unit, "uml@web.service": tc.unit, "uml@mail.service": tc.unit}}
			env := newTestEnv(t, testConfigs, sd)
			env.Kernel = func(_ context.Context, name string) (kernelInfo, error) {
				if tc.kernel != nil {
					return *tc.kernel, nil
				}
				if tc.kerr != nil {
					return kernelInfo{}, tc.kerr
				}
				return kernelInfo{}, errNotRunning
			}
			env.Traffic = func(context.Context, *config.Guest) (traffic, error) {
				if tc.traffic == nil {
					t.Error("counters read for a guest not running or without a network")
					return traffic{}, nil
				}
				return *tc.traffic, nil
			}
			env.ConsoleLog = func(_ context.Context, name string, n int) ([]string, error) {
				if n != 10 {
					t.Errorf("asked for %d console lines, want the default 10", n)
				}
				if tc.console != nil {
					return tc.console, nil
				}
				return console, nil
			}
			stdout, stderr, status := runCLI(t, env, tc.args...)
			golden.Check(t, filepath.Join("testdata", tc.name+".golden"), transcript(tc.args, stdout, stderr, status))
		})
	}
}
