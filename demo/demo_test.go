//go:build demo

// Package demo is `make demo`: the DNS bastion of the design, run by umlsd
// in a throwaway systemd machine (internal/testbed) with a private network
// (internal/bastion), as an administrator would see it: started, queried,
// forging packets that its firewall drops, stopped, and nothing left. It is
// a test only to reuse the test bed, which tears the machine down whatever
// happens; the build tag keeps it out of `make test`.
package demo

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"umlsd/internal/bastion"
)

func TestDemo(t *testing.T) {
	say := func(format string, args ...any) { fmt.Printf("\n==> "+format+"\n", args...) }

	say("building a guest image with Debian's dnsmasq, and booting a throwaway systemd machine with umlsd installed (make install)")
	say("its network: bridge br0 10.1.1.1/24 with a client namespace (10.1.1.50) on it; an upstream namespace (10.2.2.2 DNS, 10.2.2.3 logserver) routed by the machine")
	m := bastion.Boot(t, map[string]string{
		// umlsd.probes: once the test says go, the guest tries what a
		// compromised guest would (see internal/bastion).
		"dns": bastion.GuestConf(bastion.Policy, "umlsd.probes", "10.1.1.10/24"),
	})
	run := func(args ...string) string {
		fmt.Printf("\n# %s\n", strings.Join(args, " "))
		stdout, stderr, err := m.Run(t.Context(), args...)
		fmt.Print(stdout, stderr)
		if err != nil {
			fmt.Printf("(exit: %v)\n", err)
		}
		return stdout
	}
	run("cat", "/etc/uml/dns.conf")

	say("starting the guest: systemctl start returns when its DNS server accepts connections (Ready=tcp:53)")
	start := time.Now()
	run("systemctl", "start", "uml@dns")
	fmt.Printf("(took %v)\n", time.Since(start).Round(time.Millisecond))
	run("systemctl", "status", "--no-pager", "-n", "0", "uml@dns")
	say("the guest boots umlsd's own kernel (no modules, no hostfs), unprivileged, chrooted, without address randomisation")
	run("umlctl", "status", "-n", "0", "dns")
	run("sh", "-c", "k=$(pgrep -P $(systemctl show -P MainPID uml@dns)); echo \"kernel: $(readlink /proc/$k/exe)\"; "+
		"grep -E '^(Uid|CapEff|NoNewPrivs)' /proc/$k/status; echo \"root: $(readlink /proc/$k/root)\"; echo \"personality: $(cat /proc/$k/personality)\"")
	run("ip", "-br", "link", "show", "master", "br0")
	run("journalctl", "--no-pager", "-u", "uml@dns", "-o", "cat", "-g", "firewall|tap|ready")

	say("querying it from the client namespace, over UDP and TCP; other names it asks its upstream")
	for _, q := range [][]string{
		{"dig", "+short", "@10.1.1.10", "dns.test"},
		{"dig", "+short", "+tcp", "@10.1.1.10", "dns.test"},
		{"dig", "+short", "@10.1.1.10", "www.upstream.test"},
	} {
		run(bastion.InNetns("client", q...)...)
	}
	say("what its policy does not list is closed: the guest listens on tcp/22 (HostAccess: the host only) and tcp/2222 (nothing)")
	for _, c := range []struct{ netns, port string }{{"client", "22"}, {"client", "2222"}, {"", "22"}} {
		who := "the client"
		if c.netns == "" {
			who = "the host"
		}
		fmt.Printf("\n# from %s: busybox nc -w 2 10.1.1.10 %s\n", who, c.port)
		if got := bastion.Connect(t, m, c.netns, "10.1.1.10", c.port); got != "" {
			fmt.Printf("answered: %s\n", got)
		} else {
			fmt.Println("(no connection)")
		}
	}

	say("the guest misbehaves: it connects where it may not, and sends with a forged IPv4 source, a forged MAC and a forged ARP reply")
	m.MustRun(t, "ip", "addr", "add", bastion.GoAddress+"/24", "dev", "br0")
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(time.Second) {
		out, _, _ := m.Run(t.Context(), "journalctl", "--no-pager", "-u", "uml@dns", "-o", "cat", "-g", "UMLSD-NET: done")
		if strings.Contains(out, "done") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the guest's probes did not finish in 60 s")
		}
	}
	run("journalctl", "--no-pager", "-u", "uml@dns", "-o", "cat", "-g", "UMLSD-NET: (host|upstream|spoof|syslog)")

	say("each forged packet was dropped, and counted in the guest's own chains")
	run("iptables", "-t", "raw", "-L", "uml-dns-spoof", "-v", "-n", "-x")
	run("ebtables", "-t", "nat", "-L", "uml-dns-link", "--Lc")
	run("iptables", "-t", "mangle", "-L", "uml-dns-out", "-v", "-n", "-x")

	say("stopping the guest: it shuts down cleanly, and its tap, chains and rules are gone")
	start = time.Now()
	run("systemctl", "stop", "uml@dns")
	fmt.Printf("(took %v)\n", time.Since(start).Round(time.Millisecond))
	run("journalctl", "--no-pager", "-u", "uml@dns", "-o", "cat", "-n", "6")
	run("sh", "-c", "ip -br link | grep uml- || echo 'no uml- interface'; "+
		"(iptables-save; ip6tables-save; ebtables-save) | grep uml-dns || echo 'no uml-dns chain or rule'; "+
		"[ -z \"$(ls -A /run/uml)\" ] && echo '/run/uml is empty'")

	say("tearing the machine down; the host is unchanged")
}
