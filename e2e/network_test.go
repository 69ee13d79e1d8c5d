package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"umlsd/internal/bastion"
	"umlsd/internal/testbed"
)

// unitContext is a guest unit's status and journal, and the machine's
// network, for failure messages.
func unitContext(t *testing.T, m *testbed.Machine, unit string) string {
	t.Helper()
	return fmt.Sprintf("status:\n%s\njournal:\n%s\n%s", status(t, m, unit), journal(t, m, "-u", unit), bastion.NetState(t, m))
}

// probeResults waits until the guest of unit has run its probes and returns
// their results, WHAT to RESULT.
func probeResults(t *testing.T, m *testbed.Machine, unit string) map[string]string {
	t.Helper()
	// Each wait lasts up to 30 s; the probes take about 20 after the go.
	waitJournal(t, m, unit, "UMLSD-NET: go=yes")
	waitJournal(t, m, unit, "UMLSD-NET: done=yes")
	got := map[string]string{}
	for _, match := range regexp.MustCompile(`UMLSD-NET: ([a-z0-9-]+)=(\S*)`).FindAllStringSubmatch(journal(t, m, "-u", unit), -1) {
		got[match[1]] = match[2]
	}
	return got
}

// dropCounts are the packets the DROP rules of a guest's anti-spoofing
// chains counted.
type dropCounts struct {
	spoof4, spoof6 int    // iptables and ip6tables raw BASE-spoof
	mac, arp       int    // ebtables nat BASE-link: by source MAC, and ARP
	listing        string // the chains, for messages
}

// iptablesDrops sums the packet counters of the DROP rules of a chain
// (cmd is iptables or ip6tables) and returns the chain's listing.
func iptablesDrops(t *testing.T, m *testbed.Machine, cmd, table, chain string) (int, string) {
	t.Helper()
	out := m.MustRun(t, cmd, "-t", table, "-L", chain, "-v", "-n", "-x")
	sum := 0
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || f[2] != "DROP" {
			continue
		}
		n, err := strconv.Atoi(f[0])
		if err != nil {
			t.Fatalf("%s -t %s -L %s: counter %q in %q", cmd, table, chain, f[0], line)
		}
		sum += n
	}
	return sum, fmt.Sprintf("$ %s -t %s -L %s -v -n -x\n%s", cmd, table, chain, out)
}

// ebtablesTables are the ebtables tables where something of a guest could
// be left (a table nothing has used does not exist).
var ebtablesTables = []string{"filter", "nat"}

var ebtablesDrop = regexp.MustCompile(`-j DROP , pcnt = (\d+) `)

func drops(t *testing.T, m *testbed.Machine, name string) dropCounts {
	t.Helper()
	var d dropCounts
	var l4, l6 string
	d.spoof4, l4 = iptablesDrops(t, m, "iptables", "raw", "uml-"+name+"-spoof")
	d.spoof6, l6 = iptablesDrops(t, m, "ip6tables", "raw", "uml-"+name+"-spoof")
	link, stderr, err := m.Run(t.Context(), "ebtables", "-t", "nat", "-L", "uml-"+name+"-link", "--Lc")
	if err != nil {
		t.Fatalf("ebtables -t nat -L uml-%s-link: %v: %s\n%s", name, err, stderr, bastion.NetState(t, m))
	}
	for _, line := range strings.Split(link, "\n") {
		match := ebtablesDrop.FindStringSubmatch(line)
		if match == nil {
			continue
		}
		n, _ := strconv.Atoi(match[1])
		switch {
		case strings.HasPrefix(line, "-s ! "):
			d.mac += n
		case strings.HasPrefix(line, "-p ARP "):
			d.arp += n
		}
	}
	d.listing = fmt.Sprintf("%s%s$ ebtables -t nat -L uml-%s-link --Lc\n%s", l4, l6, name, link)
	return d
}

// hostKernelLog makes the host's kernel log what netfilter logs in other
// network namespaces, such as the machine's (net.netfilter.nf_log_all_netns
// is 1 until the test ends, then what it was), and returns a function that
// reads the host's kernel log from now on.
func hostKernelLog(t *testing.T) func() string {
	t.Helper()
	const knob = "/proc/sys/net/netfilter/nf_log_all_netns"
	old, err := os.ReadFile(knob)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(knob, []byte("1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.WriteFile(knob, old, 0o644); err != nil {
			t.Errorf("restoring %s: %v", knob, err)
		}
	})
	marker := fmt.Sprintf("umlsd e2e: %s starts (pid %d, %d)", t.Name(), os.Getpid(), time.Now().UnixNano())
	if err := os.WriteFile("/dev/kmsg", []byte(marker+"\n"), 0); err != nil {
		t.Fatal(err)
	}
	return func() string {
		out, err := exec.CommandContext(t.Context(), "dmesg").Output()
		if err != nil {
			return fmt.Sprintf("(dmesg: %v)", err)
		}
		_, after, found := strings.Cut(string(out), marker)
		if !found {
			return fmt.Sprintf("(the kernel log lost the marker %q)\n%s", marker, out)
		}
		return after
	}
}

// logLine returns the first line of log that holds every one of words.
func logLine(log string, words ...string) string {
	for _, line := range strings.Split(log, "\n") {
		all := true
		for _, w := range words {
			all = all && strings.Contains(line, w)
		}
		if all {
			return line
		}
	}
	return ""
}

// requireNoNetworkLeft checks that nothing of guest name is left in the
// machine's network and firewall: no tap uml-NAME, and no chain, rule or
// log prefix naming uml-NAME in iptables, ip6tables or ebtables; and then
// requireNothingLeft.
func requireNoNetworkLeft(t *testing.T, m *testbed.Machine, name string) {
	t.Helper()
	owned := regexp.MustCompile(`uml-` + regexp.QuoteMeta(name) + `([^a-z0-9_]|$)`)
	for _, line := range strings.Split(m.MustRun(t, "ip", "-o", "link", "show"), "\n") {
		if owned.MatchString(line) {
			t.Errorf("a link of guest %s is left: %s", name, line)
		}
	}
	cmds := [][]string{{"iptables-save"}, {"ip6tables-save"}}
	for _, table := range ebtablesTables {
		cmds = append(cmds, []string{"ebtables", "-t", table, "-L"})
	}
	for _, cmd := range cmds {
		out, stderr, err := m.Run(t.Context(), cmd...)
		if err != nil && !strings.Contains(stderr, "does not exist") {
			t.Fatalf("%v\n%s", err, out)
		}
		var left []string
		for _, line := range strings.Split(out, "\n") {
			if owned.MatchString(line) {
				left = append(left, line)
			}
		}
		if len(left) > 0 {
			t.Errorf("%s still has what guest %s owned:\n%s", strings.Join(cmd, " "), name, strings.Join(left, "\n"))
		}
	}
	requireNothingLeft(t, m, name)
}

// TestNetworkDNSGuest: a DNS bastion on a bridge answers DNS from the
// bridge over IPv4 and IPv6, forwards to its upstream server, is reachable
// from the host only on tcp/22, may open only what ConnectOut= lists, and
// cannot forge IPv4 or IPv6 sources, its MAC or ARP: each is dropped,
// counted and logged. Ready=tcp:53 waits for the server. Neither a stop nor
// a stop after kill -9 of the supervisor leaves anything behind.
func TestNetworkDNSGuest(t *testing.T) {
	m := bastion.Boot(t, map[string]string{
		"dns":     bastion.GuestConf(bastion.Policy, "umlsd.probes", "10.1.1.10/24", "fd00:1::10/64"),
		"slowdns": bastion.GuestConf("AcceptIn=udp/53 tcp/53\n", "umlsd.slowdns", "10.1.1.14/24"),
		"killed":  bastion.GuestConf(bastion.Policy+"[Service]\nRestart=no\n", "umlsd.none", "10.1.1.15/24", "fd00:1::15/64"),
	})
	kernelLog := hostKernelLog(t)
	const unit = "uml@dns.service"
	t.Logf("systemctl start %s took %v", unit, timedStart(t, m, unit).Round(time.Millisecond))
	before := drops(t, m, "dns")
	m.MustRun(t, "ip", "addr", "add", bastion.GoAddress+"/24", "dev", "br0")
	probes := probeResults(t, m, unit)
	after := drops(t, m, "dns")
	t.Logf("the guest's probes: %v", probes)

	t.Run("DNS from the bridge", func(t *testing.T) {
		for _, q := range []struct{ server, name, want string }{
			{"@10.1.1.10", "dns.test", "10.1.1.10"},
			{"@fd00:1::10", "dns.test", "10.1.1.10"},
			{"@10.1.1.10", "www.upstream.test", "10.2.2.80"},
		} {
			for _, proto := range []string{"+notcp", "+tcp"} {
				if got := bastion.Dig(t, m, "client", proto, q.server, q.name); got != q.want {
					t.Errorf("dig %s %s %s from the client: %q, want %q", proto, q.server, q.name, got, q.want)
				}
			}
		}
		if t.Failed() {
			t.Log(unitContext(t, m, unit))
		}
	})

	t.Run("only the host reaches tcp/22", func(t *testing.T) {
		for _, c := range []struct{ netns, port, want string }{
			{"client", "22", ""},
			{"client", "2222", ""},
			{"", "22", "guest-22"},
			{"", "2222", ""},
		} {
			from := "the machine"
			if c.netns != "" {
				from = "the " + c.netns
			}
			for _, addr := range []string{"10.1.1.10", "fd00:1::10"} {
				if got := bastion.Connect(t, m, c.netns, addr, c.port); got != c.want {
					t.Errorf("tcp/%s on %s from %s: %q, want %q (\"\": no connection)", c.port, addr, from, got, c.want)
				}
			}
		}
		if t.Failed() {
			t.Log(unitContext(t, m, unit))
		}
	})

	t.Run("the guest opens only what ConnectOut lists", func(t *testing.T) {
		for what, want := range map[string]string{
			"host-8081":   "ok:host-8081",
			"host-8080":   "blocked",
			"upstream-80": "blocked",
		} {
			if got := probes[what]; got != want {
				t.Errorf("the guest's probe %s: %q, want %q", what, got, want)
			}
		}
		logged := m.MustRun(t, "cat", "/run/umlsd-test/syslog-10.2.2.3.log")
		if !strings.Contains(logged, bastion.SyslogProbe+" from dns") {
			t.Errorf("the log server did not get the guest's syslog message; it got:\n%s", logged)
		}
		if other, _, _ := m.Run(t.Context(), "cat", "/run/umlsd-test/syslog-10.2.2.2.log"); other != "" {
			t.Errorf("udp/514 to 10.2.2.2, not the log server, passed:\n%s", other)
		}
		if n, listing := iptablesDrops(t, m, "iptables", "mangle", "uml-dns-out"); n == 0 {
			t.Errorf("uml-dns-out dropped nothing:\n%s", listing)
		}
		if line := logLine(kernelLog(), "uml-dns policy: ", "DST=10.1.1.1 ", "DPT=8080 "); line == "" {
			t.Errorf("no kernel log line \"uml-dns policy: \" for tcp/8080 to the host:\n%s", kernelLog())
		}
		if t.Failed() {
			t.Log(unitContext(t, m, unit))
		}
	})

	t.Run("forged traffic is dropped, counted and logged", func(t *testing.T) {
		log := kernelLog()
		for _, c := range []struct {
			what, control string // the probe, and the same without forging
			counter       string
			before, after int
			logWords      []string
		}{
			{"spoof-ipv4", "", "iptables -t raw uml-dns-spoof DROP", before.spoof4, after.spoof4,
				[]string{"uml-dns spoof: ", "SRC=10.1.1.99 "}},
			{"spoof-ipv6", "", "ip6tables -t raw uml-dns-spoof DROP", before.spoof6, after.spoof6,
				[]string{"uml-dns spoof: ", "SRC=fd00:0001:0000:0000:0000:0000:0000:0099 "}},
			{"spoof-arp", "arp-own", "ebtables uml-dns-link -p ARP DROP", before.arp, after.arp,
				[]string{"uml-dns spoof: ", "10.1.1.77"}},
			{"spoof-mac", "host-8081-again", "ebtables uml-dns-link -s ! MAC DROP", before.mac, after.mac,
				[]string{"uml-dns spoof: ", bastion.ForgedMAC}},
		} {
			if got := probes[c.what]; got != "blocked" {
				t.Errorf("the guest's probe %s: %q, want blocked", c.what, got)
			}
			if c.control != "" && !strings.HasPrefix(probes[c.control], "ok") {
				t.Errorf("the guest's probe %s, %s without forging: %q, want ok", c.control, c.what, probes[c.control])
			}
			if c.after <= c.before {
				t.Errorf("%s: %d packets before the probes, %d after", c.counter, c.before, c.after)
			}
			if line := logLine(log, c.logWords...); line == "" {
				t.Errorf("%s: no host kernel log line with %q", c.what, c.logWords)
			} else {
				t.Logf("%s logged: %s", c.what, line)
			}
		}
		// The guest's forged syslog message (udp/514 to the log server,
		// which its policy allows) did not arrive; its own did.
		if logged := m.MustRun(t, "cat", "/run/umlsd-test/syslog-10.2.2.3.log"); strings.Contains(logged, bastion.SyslogForged) {
			t.Errorf("the log server got the guest's syslog message from a forged source:\n%s", logged)
		}
		if t.Failed() {
			t.Logf("before the probes:\n%s\nafter:\n%s\nhost kernel log:\n%s", before.listing, after.listing, log)
		}
	})

	t.Run("umlctl status shows the counters", func(t *testing.T) {
		out, _ := mustUmlctl(t, m, 0, "status", "--json", "dns")
		var st struct {
			Traffic struct {
				From    uint64 `json:"from_guest_packets"`
				To      uint64 `json:"to_guest_packets"`
				Spoofed int    `json:"spoofed_drops"`
				Policy  int    `json:"policy_drops"`
			} `json:"traffic"`
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("umlctl status --json dns: %v\n%s", err, out)
		}
		tr := st.Traffic
		// The counters only grow: at least what the chains counted after
		// the probes.
		if spoofed := after.spoof4 + after.spoof6 + after.mac + after.arp; tr.Spoofed < spoofed {
			t.Errorf("umlctl status: %d spoofed packets dropped, but the chains counted %d", tr.Spoofed, spoofed)
		}
		// The probes tried connections that ConnectOut= does not list.
		if tr.Policy == 0 || tr.From == 0 || tr.To == 0 {
			t.Errorf("umlctl status: counters %+v, want packets both ways and policy drops\n%s", tr, out)
		}
		text, _ := mustUmlctl(t, m, 0, "status", "dns")
		if !strings.Contains(text, "Dropped: ") || !strings.Contains(text, "Network: uml-dns on br0") {
			t.Errorf("umlctl status dns lacks the network and drop lines:\n%s", text)
		}
	})

	t.Run("Ready=tcp:53 waits for the server", func(t *testing.T) {
		// The guest's dnsmasq starts 3 s after its userspace.
		if d := timedStart(t, m, "uml@slowdns.service"); d < 3*time.Second {
			t.Errorf("start returned after %v, before the guest's server ran", d)
		}
		if got := show(t, m, "uml@slowdns.service", "ActiveState"); got != "active" {
			t.Errorf("uml@slowdns is %s", got)
		}
		// Active means the server answers.
		if got := bastion.Dig(t, m, "client", "+tcp", "@10.1.1.14", "dns.test"); got != "10.1.1.10" {
			t.Errorf("right after start, the guest answers %q:\n%s", got, unitContext(t, m, "uml@slowdns.service"))
		}
		m.MustRun(t, "systemctl", "stop", "uml@slowdns.service")
		requireNoNetworkLeft(t, m, "slowdns")
	})

	t.Run("stop leaves nothing", func(t *testing.T) {
		m.MustRun(t, "systemctl", "stop", unit)
		if got := journal(t, m, "-u", unit); !strings.Contains(got, "stopped: the guest shut down cleanly") {
			t.Errorf("%s did not shut down cleanly:\n%s", unit, got)
		}
		requireNoNetworkLeft(t, m, "dns")
	})

	t.Run("kill -9 of the supervisor, then stop, leaves nothing", func(t *testing.T) {
		// Without a restart: what is left is what the killed supervisor
		// left, undone by ExecStopPost=.
		const unit = "uml@killed.service"
		timedStart(t, m, unit)
		m.MustRun(t, "systemctl", "kill", "--kill-whom=main", "--signal=SIGKILL", unit)
		deadline := time.Now().Add(30 * time.Second)
		for show(t, m, unit, "ActiveState") != "failed" {
			if time.Now().After(deadline) {
				t.Fatalf("%s did not fail after its supervisor was killed:\n%s", unit, unitContext(t, m, unit))
			}
			time.Sleep(200 * time.Millisecond)
		}
		waitJournal(t, m, unit, "undoing what the supervisor of killed left behind")
		m.MustRun(t, "systemctl", "stop", unit)
		requireNoNetworkLeft(t, m, "killed")
	})

	t.Run("kill -9 of the supervisor, restart, then stop, leaves nothing", func(t *testing.T) {
		timedStart(t, m, unit)
		m.MustRun(t, "systemctl", "kill", "--kill-whom=main", "--signal=SIGKILL", unit)
		deadline := time.Now().Add(60 * time.Second)
		for show(t, m, unit, "NRestarts") != "1" || show(t, m, unit, "ActiveState") != "active" {
			if time.Now().After(deadline) {
				t.Fatalf("%s did not come back after its supervisor was killed:\n%s", unit, unitContext(t, m, unit))
			}
			time.Sleep(200 * time.Millisecond)
		}
		waitJournal(t, m, unit, "undoing what the supervisor of dns left behind")
		if got := bastion.Dig(t, m, "client", "@10.1.1.10", "dns.test"); got != "10.1.1.10" {
			t.Errorf("after the restart the guest answers %q:\n%s", got, unitContext(t, m, unit))
		}
		m.MustRun(t, "systemctl", "stop", unit)
		requireNoNetworkLeft(t, m, "dns")
	})
}

// TestNetworkFence: two guests on one bridge are each fenced by their own
// policy. A may open udp/53 and tcp/22 to B; B accepts udp/53, tcp/53 and
// tcp/2222 from anyone, and opens nothing. So A reaches B's udp/53 (both
// allow it), not B's tcp/53 or tcp/2222 (B accepts them, A may not open
// them) nor tcp/22 (A may open it, B does not accept it); and B reaches
// nothing of A, not even udp/53, which A accepts.
func TestNetworkFence(t *testing.T) {
	m := bastion.Boot(t, map[string]string{
		"a": bastion.GuestConf("AcceptIn=udp/53\nConnectOut=udp/53@10.1.1.12 tcp/22@10.1.1.12\n",
			"umlsd.probes umlsd.peer=10.1.1.12", "10.1.1.11/24"),
		"b": bastion.GuestConf("AcceptIn=udp/53 tcp/53 tcp/2222\n", "umlsd.probes umlsd.peer=10.1.1.11", "10.1.1.12/24"),
	})
	m.MustRun(t, "systemctl", "start", "uml@a.service", "uml@b.service")
	// What B accepts, it accepts from the client.
	if got := bastion.Dig(t, m, "client", "+tcp", "@10.1.1.12", "dns.test"); got != "10.1.1.10" {
		t.Errorf("dig +tcp @10.1.1.12 from the client: %q", got)
	}
	if got := bastion.Connect(t, m, "client", "10.1.1.12", "2222"); got != "guest-2222" {
		t.Errorf("B's tcp/2222 from the client: %q, want guest-2222", got)
	}
	if got := bastion.Dig(t, m, "client", "@10.1.1.11", "dns.test"); got != "10.1.1.10" {
		t.Errorf("dig @10.1.1.11 from the client: %q", got)
	}
	m.MustRun(t, "ip", "addr", "add", bastion.GoAddress+"/24", "dev", "br0")
	for _, c := range []struct {
		guest string
		want  map[string]string
	}{
		{"a", map[string]string{"peer-udp53": "ok", "peer-tcp53": "blocked", "peer-tcp22": "blocked", "peer-tcp2222": "blocked"}},
		{"b", map[string]string{"peer-udp53": "blocked", "peer-tcp53": "blocked", "peer-tcp22": "blocked", "peer-tcp2222": "blocked"}},
	} {
		unit := "uml@" + c.guest + ".service"
		got := probeResults(t, m, unit)
		for what, want := range c.want {
			if got[what] != want {
				t.Errorf("%s's probe %s: %q, want %q", c.guest, what, got[what], want)
			}
		}
	}
	// Who dropped what: A's own policy what A may not open, B's what B
	// does not accept, B's own policy what B may not open.
	for _, c := range []struct{ chain, why string }{
		{"uml-a-out", "A opening B's tcp/53 and tcp/2222"},
		{"uml-b-in", "A opening B's tcp/22"},
		{"uml-b-out", "B opening anything"},
	} {
		if n, listing := iptablesDrops(t, m, "iptables", "mangle", c.chain); n == 0 {
			t.Errorf("%s dropped nothing, but should have dropped %s:\n%s", c.chain, c.why, listing)
		}
	}
	if t.Failed() {
		t.Logf("a:\n%s\nb:\n%s", journal(t, m, "-u", "uml@a.service"), unitContext(t, m, "uml@b.service"))
	}
	m.MustRun(t, "systemctl", "stop", "uml@a.service", "uml@b.service")
	requireNoNetworkLeft(t, m, "a")
	requireNoNetworkLeft(t, m, "b")
}

// TestNetworkManyGuests: ten guests started by one systemctl start, each
// with its own address and default tap, all come up and answer, and all
// stop leaving nothing.
func TestNetworkManyGuests(t *testing.T) {
	const n = 10
	configs := map[string]string{}
	var units []string
	for i := range n {
		name := fmt.Sprintf("g%d", i)
		configs[name] = bastion.GuestConf("AcceptIn=udp/53 tcp/53\n", "umlsd.none", fmt.Sprintf("10.1.1.%d/24", 20+i))
		units = append(units, "uml@"+name+".service")
	}
	m := bastion.Boot(t, configs)
	start := time.Now()
	if _, stderr, err := m.Run(t.Context(), append([]string{"systemctl", "start"}, units...)...); err != nil {
		t.Fatalf("systemctl start of %d guests: %v\n%s\n%s", n, err, stderr, bastion.NetState(t, m))
	}
	t.Logf("systemctl start of %d guests took %v", n, time.Since(start).Round(time.Millisecond))
	for i, unit := range units {
		if got := show(t, m, unit, "ActiveState"); got != "active" {
			t.Errorf("%s is %s:\n%s", unit, got, unitContext(t, m, unit))
			continue
		}
		if got := bastion.Dig(t, m, "client", fmt.Sprintf("@10.1.1.%d", 20+i), "dns.test"); got != "10.1.1.10" {
			t.Errorf("%s answers %q:\n%s", unit, got, unitContext(t, m, unit))
		}
	}
	m.MustRun(t, append([]string{"systemctl", "stop"}, units...)...)
	for i := range n {
		requireNoNetworkLeft(t, m, fmt.Sprintf("g%d", i))
	}
}
