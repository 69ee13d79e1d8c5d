package netprep

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"umlsd/config"
)

// bastion is the DNS bastion of the design, with IPv6 too.
const bastion = guestHead + `Ready=tcp:53
[Network]
Bridge=br0
Address=10.1.1.10/24 fd00:1::10/64
[Firewall]
AcceptIn=udp/53 tcp/53
ConnectOut=udp/53@!10.1.1.0/24 tcp/53@!10.1.1.0/24 udp/514@logserver
HostAccess=tcp/22
`

func bastionRules(t *testing.T, name string) RuleSet {
	t.Helper()
	return rulesOf(t, parse(t, name, bastion))
}

// rulesOf is g's rule set, with the tests' host names.
func rulesOf(t *testing.T, g *config.Guest) RuleSet {
	t.Helper()
	addrs, err := Resolve(t.Context(), g, fakeLookup)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := Rules(g, addrs)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// foreign is what a host has that is not the DNS guest's: the
// administrator's rules and chains, including a rule that mentions the
// guest, and a guest whose name starts like it.
var foreign = map[Family]string{
	IPv4: `*filter
-A FORWARD -i br0 -j ACCEPT
COMMIT
*mangle
-A FORWARD -m physdev --physdev-in uml-dns -j MARK --set-mark 1
COMMIT
*raw
:uml-dns-admin - [0:0]
-A PREROUTING -m comment --comment "jumps to uml-dns-spoof" -j uml-dns-admin
COMMIT
`,
	Bridge: `*nat
-A PREROUTING -i uml-dns -j ACCEPT
COMMIT
`,
}

func addForeign(t *testing.T, fw *Firewall) {
	t.Helper()
	if err := fw.Apply(t.Context(), "dns-2", bastionRules(t, "dns-2")); err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		script := foreign[f]
		if f == IPv6 {
			script = foreign[IPv4]
		}
		if err := fw.of(f).Restore(t.Context(), script)(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFirewallConverges applies and tears down the DNS guest's rule set in
// random orders, some interrupted midway as by a crash, on a host with
// rules and chains that are not the guest's: a complete apply always gives
// the same tables, a complete teardown always gives back the host as it
// was, and the other rules are never touched.
func TestFirewallConverges(t *testing.T) {
	rs := bastionRules(t, "dns")
	ctx := t.Context()

	fw, host := newFakeHost()
	addForeign(t, fw)
	clean := host.dump()
	if err := fw.Apply(ctx, "dns", rs); err != nil {
		t.Fatal(err)
	}
	applied := host.dump()
	if applied == clean {
		t.Fatal("Apply changed nothing")
	}

	ops := []struct {
		name string
		run  func(*Firewall) error
	}{
		{"apply", func(fw *Firewall) error { return fw.Apply(ctx, "dns", rs) }},
		{"teardown", func(fw *Firewall) error { return fw.Teardown(ctx, "dns") }},
	}
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 0))
		fw, host := newFakeHost()
		addForeign(t, fw)
		var trail []string
		for range 1 + rng.IntN(6) {
			op := ops[rng.IntN(len(ops))]
			step := op.name
			if rng.IntN(2) == 0 {
				n := rng.IntN(3)
				host.crashAfter(n)
				step += fmt.Sprintf(" (crash after %d changes)", n)
			}
			trail = append(trail, step)
			_ = op.run(fw)
			host.crashAfter(-1)
		}
		for _, final := range []struct {
			op   int
			want string
		}{{0, applied}, {0, applied}, {1, clean}, {1, clean}} {
			if err := ops[final.op].run(fw); err != nil {
				t.Fatalf("seed %d, after %q: %s: %v", seed, trail, ops[final.op].name, err)
			}
			if diff := cmp.Diff(final.want, host.dump()); diff != "" {
				t.Fatalf("seed %d, after %q then %s: tables differ (-want +got):\n%s", seed, trail, ops[final.op].name, diff)
			}
			trail = append(trail, ops[final.op].name)
		}
	}
}

// TestApplyOrder: in each table's transaction, every chain is complete
// before the first jump to it.
func TestApplyOrder(t *testing.T) {
	fw, host := newFakeHost()
	if err := fw.Apply(t.Context(), "dns", bastionRules(t, "dns")); err != nil {
		t.Fatal(err)
	}
	for _, ft := range host {
		if len(ft.scripts) != 1 {
			t.Fatalf("%s: %d restores, want one", ft.family, len(ft.scripts))
		}
		jumped := false
		for _, line := range strings.Split(ft.scripts[0], "\n") {
			switch {
			case strings.HasPrefix(line, "*"):
				jumped = false
			case strings.HasPrefix(line, "-I "):
				jumped = true
			case jumped && line != "COMMIT" && line != "":
				t.Errorf("%s: %q after the first jump", ft.family, line)
			}
		}
	}
}
