package netprep

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/google/go-cmp/cmp"
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
	g := parse(t, name, bastion)
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

// addForeign gives a fake host rules and chains that are not the guest's:
// the administrator's, and a guest whose name starts like it.
func addForeign(t *testing.T, fw *Firewall) {
	t.Helper()
	if err := fw.Apply(t.Context(), bastionRules(t, "dns-2")); err != nil {
		t.Fatal(err)
	}
	for _, f := range []Family{IPv4, IPv6} {
		tbl := fw.of(f)
		for _, r := range [][]string{
			{"filter", "FORWARD", "-i", "br0", "-j", "ACCEPT"},
			{"mangle", "FORWARD", "-m", "physdev", "--physdev-in", "uml-dns", "-j", "MARK", "--set-mark", "1"},
			{"raw", "PREROUTING", "-m", "comment", "--comment", "uml-dns-spoof", "-j", "ACCEPT"},
		} {
			if err := tbl.Append(r[0], r[1], r[2:]...); err != nil {
				t.Fatal(err)
			}
		}
		if err := tbl.ClearChain("filter", "uml-dns-admin"); err != nil {
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
	if err := fw.Apply(ctx, rs); err != nil {
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
		{"apply", func(fw *Firewall) error { return fw.Apply(ctx, rs) }},
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
				n := rng.IntN(80)
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

// TestApplyOrder: every chain is complete before the first jump to it.
func TestApplyOrder(t *testing.T) {
	fw, host := newFakeHost()
	if err := fw.Apply(t.Context(), bastionRules(t, "dns")); err != nil {
		t.Fatal(err)
	}
	for _, ft := range host {
		jumped := false
		for _, c := range ft.calls {
			var family, table, op string
			fmt.Sscanf(c, "%s -t %s %s", &family, &table, &op)
			if op == "-I" {
				jumped = true
			} else if jumped {
				t.Errorf("%s: %q after the first jump", ft.family, c)
			}
		}
	}
}
