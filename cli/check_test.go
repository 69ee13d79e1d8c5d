package cli

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"umlsd/config"
	"umlsd/generator"
	"umlsd/internal/golden"
	"umlsd/internal/testbed"
	"umlsd/supervisor"
)

// fakeChecker returns canned findings per guest and records what it was
// asked.
type fakeChecker struct {
	findings map[string][]supervisor.Finding
	checked  []string // "guest (others)"
}

func (f *fakeChecker) Check(_ context.Context, g *config.Guest, others []*config.Guest) []supervisor.Finding {
	var names []string
	for _, o := range others {
		names = append(names, o.Name)
	}
	f.checked = append(f.checked, fmt.Sprintf("%s (%s)", g.Name, strings.Join(names, " ")))
	return f.findings[g.Name]
}

// checkConfigs are the configurations of the check tests: dns and web are
// valid, a and b conflict, bad has errors, and one file is ignored.
var checkConfigs = map[string]string{
	"dns.conf": "[Guest]\nRootImage=/srv/dns.img\n[Network]\nBridge=br0\nAddress=10.1.1.10\n[Install]\nWantedBy=multi-user.target\n",
	"web.conf": "[Guest]\nRootImage=/srv/web.img\n",
	"a.conf":   "[Guest]\nRootImage=/srv/a.img\nCow=/srv/shared.cow\n",
	"b.conf":   "[Guest]\nRootImage=/srv/b.img\nCow=/srv/shared.cow\n",
	"bad.conf": "[Guest]\nRootImage=relative.img\nMemroy=1G\n",
	"Foo.conf": "[Guest]\nRootImage=/srv/foo.img\n",
}

func checkFindings() map[string][]supervisor.Finding {
	return map[string][]supervisor.Finding{
		"dns": {
			{Severity: supervisor.Note, Message: "the guest's account uml-dns does not exist yet; the guest's first start creates it, as a system user without a login"},
			{Severity: supervisor.Info, Message: "the guest boots Linux 6.1.192-umlsd (Kernel=/usr/local/libexec/umlsd/linux)"},
			{Severity: supervisor.Skipped, Message: "Cow=/var/lib/uml/dns/root.cow: permission denied; not checked further, because umlctl check does not run as root"},
		},
		"web": {
			{Severity: supervisor.Problem, Message: "Kernel=/usr/bin/linux.uml is not a program file; install that kernel, or fix Kernel="},
		},
	}
}

// checkDir makes a configuration directory holding files, as root's.
func checkDir(t *testing.T, files map[string]string) string {
	t.Helper()
	testbed.RequireRoot(t) // the loader trusts only root's files
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestCheck(t *testing.T) {
	dir := checkDir(t, checkConfigs)
	for _, tt := range []struct {
		name    string
		args    []string
		status  int
		checked []string
	}{
		{"all", []string{"check"}, ExitFailure, []string{"dns (dns web)", "web (dns web)"}},
		{"conflict", []string{"check", "a"}, ExitFailure, nil},
		{"notes", []string{"check", "dns"}, 0, []string{"dns (dns web)"}},
		{"units", []string{"check", "--units", "dns", "web", "dns"}, ExitFailure, []string{"dns (dns web)", "web (dns web)"}},
		{"json", []string{"check", "--json"}, ExitFailure, []string{"dns (dns web)", "web (dns web)"}},
		{"json-clean", []string{"check", "--json", "dns"}, 0, []string{"dns (dns web)"}},
		{"no-such-guest", []string{"check", "dns", "wbe"}, ExitNoGuest, nil},
		{"invalid-name", []string{"check", "Foo"}, ExitNoGuest, nil},
		{"units-and-json", []string{"check", "--units", "--json"}, ExitUsage, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fc := &fakeChecker{findings: checkFindings()}
			var stdout, stderr bytes.Buffer
			env := &Env{
				Stdout: &stdout, Stderr: &stderr, ConfigDir: dir,
				Units:   generator.Options{Template: "/lib/systemd/system/uml@.service"},
				Checker: fc,
			}
			err := Run(t.Context(), tt.args, env)
			if got := ExitStatus(err); got != tt.status {
				t.Errorf("exit status %d, want %d (error %v)", got, tt.status, err)
			}
			if diff := cmp.Diff(tt.checked, fc.checked); diff != "" {
				t.Errorf("guests checked on the host (-want +got):\n%s", diff)
			}
			out := fmt.Sprintf("$ umlctl %s\n%s--- stderr\n%s--- exit status %d\n", strings.Join(tt.args, " "), stdout.String(), stderr.String(), ExitStatus(err))
			golden.Check(t, filepath.Join("testdata", "check-"+tt.name+".golden"), strings.ReplaceAll(out, dir, "/etc/uml"))
		})
	}
}

func TestCheckNoGuests(t *testing.T) {
	dir := checkDir(t, nil)
	var stdout, stderr bytes.Buffer
	err := Run(t.Context(), []string{"check"}, &Env{Stdout: &stdout, Stderr: &stderr, ConfigDir: dir, Checker: &fakeChecker{}})
	if err != nil {
		t.Errorf("error %v, want none", err)
	}
	if want := "no guest is configured in " + dir + "\n"; stdout.String() != want {
		t.Errorf("output %q, want %q", stdout.String(), want)
	}
}

// The units check prints are the generator's, byte for byte.
func TestCheckUnitsAreTheGenerators(t *testing.T) {
	dir := checkDir(t, map[string]string{"dns.conf": checkConfigs["dns.conf"]})
	opts := generator.Options{Template: "/usr/lib/systemd/system/uml@.service", InContainer: true}
	var want bytes.Buffer
	gen := generator.Generator{Loader: config.Loader{Dir: dir}, Options: opts, Log: generator.NewLogger("test", 1, generator.LevelInfo, nil, &bytes.Buffer{})}
	if err := gen.DryRun(&want); err != nil {
		t.Fatal(err)
	}
	var stdout bytes.Buffer
	err := Run(t.Context(), []string{"check", "--units"}, &Env{Stdout: &stdout, Stderr: &bytes.Buffer{}, ConfigDir: dir, Units: opts, Checker: &fakeChecker{}})
	if err != nil {
		t.Fatal(err)
	}
	got := strings.TrimSuffix(stdout.String(), "1 guest checked: no problems\n")
	if diff := cmp.Diff(want.String(), got); diff != "" {
		t.Errorf("units (-generator +check):\n%s", diff)
	}
	if !slices.Contains(strings.Split(got, "\n"), "# multi-user.target.wants/uml@dns.service -> /usr/lib/systemd/system/uml@.service") {
		t.Errorf("the link to the template is not in the units:\n%s", got)
	}
}
