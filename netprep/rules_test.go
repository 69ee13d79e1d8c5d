package netprep

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"umlsd/config"
	"umlsd/internal/golden"
)

// parse is guest name's configuration text.
func parse(t testing.TB, name, text string) *config.Guest {
	t.Helper()
	g, err := config.Parse(name, config.Source{Path: "/etc/uml/" + name + ".conf", Data: []byte(text)})
	if err != nil {
		t.Fatalf("parsing %s: %v", name, err)
	}
	return g
}

const guestHead = "[Guest]\nRootImage=/var/lib/uml/images/dns.img\n"

// fakeLookup resolves the tests' host names.
func fakeLookup(_ context.Context, host string) ([]netip.Addr, error) {
	hosts := map[string][]string{
		"logserver":  {"10.2.2.3"},
		"dualstack":  {"192.0.2.7", "2001:db8::7"},
		"twoaddress": {"192.0.2.8", "192.0.2.9"},
	}
	var out []netip.Addr
	for _, a := range hosts[host] {
		out = append(out, netip.MustParseAddr(a))
	}
	if out == nil {
		return nil, errors.New("no such host")
	}
	return out, nil
}

func TestRulesGolden(t *testing.T) {
	for _, tc := range []struct{ name, guest, conf string }{
		{"ipv4-antispoofing", "web", guestHead + "[Network]\nBridge=br0\nAddress=10.1.1.20/24\n"},
		{"dual-antispoofing", "web", guestHead + "[Network]\nBridge=br0\nMAC=52:54:00:12:34:56\nAddress=10.1.1.20/24 2001:db8:1::20/64\n"},
		{"dns-bastion", "dns", guestHead + `Ready=tcp:53
[Network]
Bridge=br0
Address=10.1.1.10
[Firewall]
AcceptIn=udp/53 tcp/53
ConnectOut=udp/53@!10.1.1.0/24 tcp/53@!10.1.1.0/24
ConnectOut=udp/514@logserver
HostAccess=tcp/22
`},
		{"dual-firewall", "mail", guestHead + `[Network]
Bridge=br1
Tap=tap-mail
Address=10.1.1.30/24 2001:db8:1::30/64
[Firewall]
AcceptIn=tcp/25 tcp/587@10.0.0.0/8 tcp/993@!2001:db8:bad::/48 icmp/echo-request
ConnectOut=tcp/1024-65535@dualstack udp/53@!dualstack icmp/packet-too-big icmp/3 icmp
HostAccess=tcp/22
`},
		{"no-antispoofing-no-log", "lab", guestHead + `[Network]
Bridge=br0
AntiSpoofing=no
[Firewall]
AcceptIn=tcp/80
Log=no
`},
		{"long-name", "a-rather-long-guest-name-01", guestHead + "[Network]\nBridge=br0\nTap=tap-long\nAddress=10.1.1.40\n[Firewall]\nAcceptIn=tcp/80\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := parse(t, tc.guest, tc.conf)
			rs := rulesOf(t, g)
			// What a clean host is given, one restore input per family.
			var sb strings.Builder
			for _, f := range families {
				fmt.Fprintf(&sb, "# %s\n%s", f, restoreScript(f, nil, Base(g.Name), rs))
			}
			golden.Check(t, filepath.Join("testdata", "rules-"+tc.name+".txt"), sb.String())
		})
	}
}

func TestRulesErrors(t *testing.T) {
	for _, tc := range []struct{ name, conf, want string }{
		{"unresolvable", "ConnectOut=udp/514@nowhere\n",
			"/etc/uml/x.conf: the rule udp/514@nowhere names the host nowhere, which does not resolve (no such host); fix the name or the host's resolver (/etc/hosts), or write an address"},
		{"negated name with two addresses", "ConnectOut=udp/53@!twoaddress\n",
			"/etc/uml/x.conf: the rule udp/53@!twoaddress excludes twoaddress, which has 2 ipv4 addresses (192.0.2.8/32 192.0.2.9/32); a rule can exclude one address or one CIDR, so write them as separate CIDRs or use a host name with one address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := parse(t, "x", guestHead+"[Network]\nBridge=br0\nAddress=10.1.1.9\n[Firewall]\n"+tc.conf)
			addrs, err := Resolve(t.Context(), g, fakeLookup)
			if err == nil {
				_, err = Rules(g, addrs)
			}
			if err == nil {
				t.Fatal("no error")
			}
			if diff := cmp.Diff(tc.want, err.Error()); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
}

// TestNames: every chain name fits iptables (28 bytes) and every log
// prefix its 29, and a long name cannot take a short one's chains.
func TestNames(t *testing.T) {
	long := strings.Repeat("x", 32)
	for _, name := range []string{"a", "sixteen-chars-ab", "seventeen-chars-a", long} {
		b := Base(name)
		if len(b+acceptSuffix) > 28 || len(b+" "+policyReason+": ") > 29 {
			t.Errorf("Base(%q) = %q is too long", name, b)
		}
		if len(name) > 16 && !strings.Contains(b, ".") {
			t.Errorf("Base(%q) = %q could be a short name's", name, b)
		}
	}
	if Base("seventeen-chars-a") == Base("seventeen-chars-b") {
		t.Error("two long names share a base")
	}
}

func TestLinkLocal(t *testing.T) {
	mac, _ := config.ParseMAC("52:54:00:12:34:56")
	if got, want := linkLocal(mac).String(), "fe80::5054:ff:fe12:3456"; got != want {
		t.Errorf("linkLocal = %s, want %s", got, want)
	}
}

func TestSplitRule(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{`-m physdev --physdev-in uml-dns -j uml-dns-spoof`, []string{"-m", "physdev", "--physdev-in", "uml-dns", "-j", "uml-dns-spoof"}},
		{`-m limit --limit 10/min -j LOG --log-prefix "uml-dns spoof: "`, []string{"-m", "limit", "--limit", "10/min", "-j", "LOG", "--log-prefix", "uml-dns spoof: "}},
		{`-m comment --comment "say \"hi\" -j x" -j ACCEPT`, []string{"-m", "comment", "--comment", `say "hi" -j x`, "-j", "ACCEPT"}},
		{`-m comment --comment "" -j ACCEPT`, []string{"-m", "comment", "--comment", "", "-j", "ACCEPT"}},
	} {
		got, err := splitRule(tc.in)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("splitRule(%q) (-want +got):\n%s", tc.in, diff)
		}
		if tgt := target(got); tgt != tc.want[len(tc.want)-1] && tgt != "LOG" {
			t.Errorf("target(%q) = %q", tc.in, tgt)
		}
	}
}
