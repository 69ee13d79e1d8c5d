// Package e2e holds the end-to-end tests: the project installed into a
// throwaway systemd machine (internal/testbed) and driven as an
// administrator would drive it.
package e2e

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"umlsd/internal/testbed"
)

// Configurations as an administrator writes them; dns.conf is the DNS
// bastion of uml.conf(5), config/testdata/dns.conf. The images need not
// exist for systemd to load the units.
var configs = map[string]string{
	"/etc/uml/web.conf": `[Guest]
Description=Web server, 100% jailed
RootImage=/srv/uml/web.img
ReadyTimeout=5min

[Service]
MemoryMax=300M
`,
	"/etc/uml/web.conf.d/10-memory.conf": `[Guest]
Memory=512M
`,
	// Line 3 is wrong; the generator must say so and skip only this guest.
	"/etc/uml/broken.conf": `[Guest]
RootImage=/srv/uml/broken.img
Memroy=64M
`,
}

func bootWithConfigs(t *testing.T) *testbed.Machine {
	t.Helper()
	testbed.RequireRoot(t)
	testbed.RequireCommands(t, "systemd-nspawn", "make", "go")
	dns, err := os.ReadFile("../config/testdata/dns.conf")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"/etc/uml/dns.conf": dns}
	for path, conf := range configs {
		files[path] = []byte(conf)
	}
	// dns is [Install]ed: at boot systemd starts it, and as the machine
	// has neither its bridge nor its image that start fails and the
	// machine is "degraded".
	return testbed.Boot(t.Context(), t, testbed.Options{Install: true, Files: files, AllowDegraded: true})
}

func TestSystemdLoadsGeneratedUnits(t *testing.T) {
	m := bootWithConfigs(t)

	cat := m.MustRun(t, "systemctl", "cat", "uml@dns.service")
	for _, want := range []string{
		"# /lib/systemd/system/uml@.service",
		"# /run/systemd/generator/uml@dns.service.d/10-umlsd.conf",
		"SourcePath=/etc/uml/dns.conf",
		"RequiresMountsFor=" + projectKernel + " /var/lib/uml/images/debian-bind.img /var/lib/uml/dns/root.cow",
	} {
		if !strings.Contains(cat, want) {
			t.Errorf("systemctl cat uml@dns lacks %q:\n%s", want, cat)
		}
	}

	// What systemd made of the drop-ins: timeouts with their margins,
	// pass-through, the group target, the description.
	for unit, want := range map[string][]string{
		"uml@dns.service": {"Description=User-Mode Linux guest dns", "TimeoutStartUSec=2min", "TimeoutStopUSec=1min",
			"PartOf=uml.target", "Type=notify", "NotifyAccess=main", "KillMode=mixed",
			"Restart=on-failure", "RestartPreventExitStatus=78"},
		"uml@web.service": {"Description=Web server, 100% jailed", "TimeoutStartUSec=5min 30s", "MemoryMax=314572800",
			"SourcePath=/etc/uml/web.conf"},
	} {
		show := m.MustRun(t, "systemctl", "show", unit)
		for _, w := range want {
			if !slices.Contains(strings.Split(show, "\n"), w) {
				t.Errorf("systemctl show %s lacks %q", unit, w)
			}
		}
	}

	// A broken file produces no unit, and says why in the journal.
	if out, _, _ := m.Run(t.Context(), "systemctl", "show", "-P", "SourcePath", "uml@broken.service"); strings.TrimSpace(out) != "" {
		t.Errorf("uml@broken.service has SourcePath %q; a broken configuration must generate nothing", out)
	}

	// systemd-analyze verify is clean for our files, the generated drop-ins
	// included (--generators=yes runs the generators as systemd does). It
	// exits 0 on warnings, so read what it says.
	_, stderr, err := m.Run(t.Context(), "systemd-analyze", "verify", "--generators=yes", "uml@dns.service", "uml@web.service", "uml.target")
	expected := map[string]bool{ // the broken guest, reported by our generator
		"uml-generator: /etc/uml/broken.conf:3: Memroy= is not a key of [Guest]; did you mean Memory=?":                                       true,
		"uml-generator: /etc/uml/broken.conf: no unit generated for uml@broken.service; fix the errors above and run systemctl daemon-reload": true,
		"/usr/lib/systemd/system-generators/uml-generator failed with exit status 1.":                                                         true,
	}
	var ours []string
	for _, line := range strings.Split(strings.TrimSpace(stderr), "\n") {
		if line == "" || !strings.Contains(line, "uml") || expected[line] {
			delete(expected, line)
			continue
		}
		ours = append(ours, line)
	}
	if len(ours) > 0 {
		t.Errorf("systemd-analyze verify warns about our units:\n%s", strings.Join(ours, "\n"))
	}
	if len(expected) > 0 {
		t.Errorf("systemd-analyze verify --generators=yes did not run our generator; stderr:\n%s", stderr)
	}
	if err != nil {
		t.Errorf("systemd-analyze verify: %v", err)
	}

	// After boot, the administrator adds a guest and changes another;
	// daemon-reload runs the generator again.
	m.WriteFile(t, "/etc/uml/late.conf", []byte("[Guest]\nRootImage=/srv/uml/late.img\nStopTimeout=2min\n"), 0o644)
	m.WriteFile(t, "/etc/uml/web.conf.d/10-memory.conf", []byte("[Guest]\nReadyTimeout=10min\n"), 0o644)
	m.MustRun(t, "systemctl", "daemon-reload")
	if got := m.MustRun(t, "systemctl", "show", "-P", "TimeoutStopUSec", "uml@late.service"); strings.TrimSpace(got) != "2min 30s" {
		t.Errorf("uml@late.service after daemon-reload: TimeoutStopUSec=%q, want 2min 30s", got)
	}
	if got := m.MustRun(t, "systemctl", "show", "-P", "TimeoutStartUSec", "uml@web.service"); strings.TrimSpace(got) != "10min 30s" {
		t.Errorf("uml@web.service after daemon-reload: TimeoutStartUSec=%q, want 10min 30s", got)
	}

	// systemctl enable works on the template.
	m.MustRun(t, "systemctl", "enable", "uml@web.service")
	if got := strings.TrimSpace(m.MustRun(t, "systemctl", "is-enabled", "uml@web.service")); got != "enabled" {
		t.Errorf("systemctl is-enabled uml@web = %q, want enabled", got)
	}
}

// TestGeneratorByHand: an administrator checks the configurations by
// running the generator; there is no /dev/kmsg in a container and none
// must appear.
func TestGeneratorByHand(t *testing.T) {
	m := bootWithConfigs(t)
	gen := "/lib/systemd/system-generators/uml-generator"
	stdout, stderr, err := m.Run(t.Context(), gen, "/root/gen-out")
	if err == nil {
		t.Fatalf("%s succeeded with a broken configuration; stderr:\n%s", gen, stderr)
	}
	want := "uml-generator: /etc/uml/broken.conf:3: Memroy= is not a key of [Guest]; did you mean Memory=?\n" +
		"uml-generator: /etc/uml/broken.conf: no unit generated for uml@broken.service; fix the errors above and run systemctl daemon-reload\n"
	if stderr != want {
		t.Errorf("stderr:\n%s\nwant:\n%s", stderr, want)
	}
	if stdout != "" {
		t.Errorf("stdout: %q, want nothing", stdout)
	}
	// The other guests were generated all the same, and nothing for the
	// broken one.
	m.MustRun(t, "test", "-f", "/root/gen-out/uml@dns.service.d/10-umlsd.conf")
	m.MustRun(t, "test", "-f", "/root/gen-out/uml@web.service.d/10-umlsd.conf")
	m.MustRun(t, "test", "!", "-e", "/root/gen-out/uml@broken.service.d")
	m.MustRun(t, "test", "!", "-e", "/dev/kmsg")

	// --dry-run shows what would be written, writes nothing, and fails
	// like the real run.
	dry, stderr, err := m.Run(t.Context(), gen, "--dry-run", "/root/dry")
	if err == nil || stderr != want {
		t.Errorf("--dry-run = %v, stderr:\n%s; want the broken file's error", err, stderr)
	}
	if !strings.Contains(dry, "# uml@web.service.d/10-umlsd.conf") {
		t.Errorf("--dry-run output lacks the web drop-in:\n%s", dry)
	}
	m.MustRun(t, "test", "!", "-e", "/root/dry")
}

// TestInstalledGuestPulledInAtBoot: a guest with [Install]
// WantedBy=multi-user.target is part of the next boot's transaction.
func TestInstalledGuestPulledInAtBoot(t *testing.T) {
	m := bootWithConfigs(t)
	m.Reboot(t.Context(), t)
	deps := m.MustRun(t, "systemctl", "list-dependencies", "--plain", "--no-pager", "multi-user.target")
	if !strings.Contains(deps, "uml@dns.service") {
		t.Errorf("multi-user.target does not pull in uml@dns.service after a reboot:\n%s", deps)
	}
	if strings.Contains(deps, "uml@web.service") {
		t.Errorf("multi-user.target pulls in uml@web.service, which has no [Install]:\n%s", deps)
	}
	// systemd did start it at boot: it left the inactive state (and, with
	// no bridge, failed rather than hanging).
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	out, _, err := m.Run(ctx, "systemctl", "show", "-P", "InactiveExitTimestampMonotonic", "uml@dns.service")
	if err != nil || strings.TrimSpace(out) == "0" || strings.TrimSpace(out) == "" {
		t.Errorf("uml@dns.service was never started at boot: InactiveExitTimestampMonotonic=%q (%v)", out, err)
	}
}
