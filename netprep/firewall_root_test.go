package netprep

import (
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// snapshot is every table of every family in the current network
// namespace, without counters and comments that change by themselves.
func snapshot(t *testing.T) string {
	t.Helper()
	var sb strings.Builder
	for _, cmd := range [][]string{{"iptables-save"}, {"ip6tables-save"}, {"ebtables", "-t", "nat", "-L"}} {
		out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", cmd, err, out)
		}
		sb.Write(out)
	}
	return regexp.MustCompile(`(?m)^#.*\n|\[\d+:\d+\]`).ReplaceAllString(sb.String(), "")
}

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", args, err, out)
	}
}

// TestFirewallReal applies the DNS guest's rules with the real iptables,
// ip6tables and ebtables in a throwaway network namespace, next to rules
// and chains that are not its own: applying twice changes nothing, and
// teardown (twice) gives back exactly what was there before.
func TestFirewallReal(t *testing.T) {
	inNewNetns(t)
	fw := NewFirewall()
	ctx := t.Context()
	for _, cmd := range []string{"iptables", "ip6tables"} {
		run(t, cmd, "-t", "filter", "-P", "FORWARD", "DROP")
		run(t, cmd, "-t", "filter", "-A", "FORWARD", "-i", "br0", "-j", "ACCEPT")
		run(t, cmd, "-t", "mangle", "-A", "FORWARD", "-m", "physdev", "--physdev-in", "uml-dns", "-j", "MARK", "--set-mark", "1")
		run(t, cmd, "-t", "raw", "-N", "uml-dns-admin")
		run(t, cmd, "-t", "raw", "-A", "PREROUTING", "-m", "comment", "--comment", "jumps to uml-dns-spoof", "-j", "uml-dns-admin")
	}
	run(t, "ebtables", "-t", "nat", "-A", "PREROUTING", "-i", "uml-dns", "-j", "ACCEPT")
	if err := fw.Apply(ctx, "dns-2", bastionRules(t, "dns-2")); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t)

	rs := bastionRules(t, "dns")
	if err := fw.Apply(ctx, "dns", rs); err != nil {
		t.Fatal(err)
	}
	applied := snapshot(t)
	for _, tbl := range rs {
		for _, c := range tbl.Chains {
			if !strings.Contains(applied, c.Name) {
				t.Errorf("chain %s is missing after Apply:\n%s", c.Name, applied)
			}
		}
	}
	if err := fw.Apply(ctx, "dns", rs); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(applied, snapshot(t)); diff != "" {
		t.Errorf("a second Apply changed the tables (-first +second):\n%s", diff)
	}
	for range 2 {
		if err := fw.Teardown(ctx, "dns"); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(before, snapshot(t)); diff != "" {
			t.Errorf("Teardown did not give back the tables as they were (-before +after):\n%s", diff)
		}
	}
}

// snapshotCounters is every table with its counters, for failures.
func snapshotCounters(t *testing.T) string {
	t.Helper()
	var sb strings.Builder
	for _, cmd := range [][]string{{"iptables-save", "-c"}, {"ip6tables-save", "-c"}, {"ebtables", "-t", "nat", "-L", "--Lc"}} {
		out, _ := exec.Command(cmd[0], cmd[1:]...).CombinedOutput()
		sb.Write(out)
	}
	return sb.String()
}
