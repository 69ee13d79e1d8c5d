package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"umlsd/guestimage"
	"umlsd/internal/testbed"
)

// The network tests run a DNS guest (dnsmasq) on a bridge inside a
// throwaway machine:
//
//	client netns ── veth ── br0 (10.1.1.1/24, fd00:1::1/64) ── tap ── guest (vec0)
//	                          │ the machine routes
//	upstream netns ── veth ── 10.2.2.1/24
//	(10.2.2.2: DNS server for upstream.test, tcp/80, udp/514; 10.2.2.3: logserver, udp/514)
//
// The machine itself listens on tcp/8080 and tcp/8081. Every listener
// answers a connection with one line naming itself, so that a client knows
// whom it reached. No traffic leaves the machine.

// dnsStartup configures the guest's network from its kernel words
// (umlsd.addr=ADDR/PREFIX,...) and starts the probes (umlsd.probes) in the
// background.
const dnsStartup = `args=" $(cat /proc/cmdline) "
has() { case "$args" in *" umlsd.$1 "*) return 0;; esac; return 1; }
arg() { for w in $args; do case "$w" in "umlsd.$1="*) echo "${w#*=}"; return;; esac; done; }
echo "UMLSD-BOOTED"
# The kernel has IPv6 (and macvlan, for the probes) as modules.
for m in /lib/umlsd-modules/*.ko; do insmod "$m"; done
# ARP requests always come from the guest's own address, whatever address
# the packet that needs them comes from; IPv6 addresses are used at once (no
# duplicate address detection: busybox ip has no nodad).
sysctl -qw net.ipv4.conf.all.arp_announce=2 \
	net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 net.ipv6.conf.vec0.accept_dad=0
ip link set vec0 up
for a in $(arg addr | tr , ' '); do
	case "$a" in
	*:*) ip -6 addr add "$a" dev vec0 ;;
	*) ip addr add "$a" dev vec0 ;;
	esac
done
ip route add default via 10.1.1.1
echo "UMLSD-NET: mac=$(cat /sys/class/net/vec0/address) addresses=$(ip -o addr show dev vec0 | awk '{printf "%s ", $4}')"
has probes && /bin/sh /etc/umlsd-probes &
true
`

// dnsServer is the guest's DNS server, on udp/53 and tcp/53: dns.test
// itself, other names from the upstream server 10.2.2.2. With
// umlsd.slowdns it starts 3 s late.
const dnsServer = `case " $(cat /proc/cmdline) " in *" umlsd.slowdns "*) sleep 3 ;; esac
echo "UMLSD-DNS: starting dnsmasq"
exec /usr/sbin/dnsmasq --keep-in-foreground --conf-file=/dev/null --pid-file --no-resolv --no-hosts \
	--server=10.2.2.2 --host-record=dns.test,10.1.1.10 --log-facility=- --log-queries \
	--user=nobody --group=nogroup
`

// dnsProbes is what a guest started with umlsd.probes tries on the
// network, each reported as "UMLSD-NET: WHAT=RESULT", then
// "UMLSD-NET: done=yes". It waits for the test's go: the host answering ARP
// for goAddress. With umlsd.peer=ADDR it probes another guest instead.
const dnsProbes = `#!/bin/sh
args=" $(cat /proc/cmdline) "
arg() { for w in $args; do case "$w" in "umlsd.$1="*) echo "${w#*=}"; return;; esac; done; }
say() { echo "UMLSD-NET: $1=$2"; }
# tcp WHAT HOST PORT: the listeners answer a connection with one line.
tcp() {
	if out=$(nc -w 3 "$2" "$3" </dev/null 2>/dev/null) && [ -n "$out" ]; then
		say "$1" "ok:$out"
	else
		say "$1" blocked
	fi
}
# ok WHAT COMMAND...: "ok" if the command succeeds.
ok() {
	what=$1
	shift
	if "$@" >/dev/null 2>&1; then say "$what" ok; else say "$what" blocked; fi
}
own=$(arg addr | cut -d, -f1 | cut -d/ -f1)
i=0
until arping -q -c 1 -w 1 -I vec0 -s "$own" ` + goAddress + ` >/dev/null 2>&1; do
	i=$((i + 1))
	if [ $i -ge 300 ]; then
		say go timeout
		exit 1
	fi
done
say go yes

peer=$(arg peer)
if [ -n "$peer" ]; then
	ok peer-udp53 nslookup dns.test "$peer"
	tcp peer-tcp53 "$peer" 53
	tcp peer-tcp22 "$peer" 22
	tcp peer-tcp2222 "$peer" 2222
	say done yes
	exit 0
fi

tcp host-8081 10.1.1.1 8081
tcp host-8080 10.1.1.1 8080
tcp upstream-80 10.2.2.2 80

# Syslog to the log server (allowed) and to the upstream server (not).
syslogd -n -R 10.2.2.3:514 -R 10.2.2.2:514 &
syslog=$!
sleep 0.5
logger -t umlsd-probe "` + syslogProbe + ` from $(hostname)"
sleep 1
kill $syslog
say syslog sent

# A forged IPv4 source: a ping, and a syslog message to the log server,
# which the policy allows.
ip addr add 10.1.1.99/32 dev vec0
ok spoof-ipv4 ping -c 1 -W 2 -I 10.1.1.99 10.1.1.1
ip route add 10.2.2.3/32 via 10.1.1.1 src 10.1.1.99
syslogd -n -R 10.2.2.3:514 &
syslog=$!
sleep 0.5
logger -t umlsd-probe "` + syslogForged + ` from $(hostname)"
sleep 1
kill $syslog
ip route del 10.2.2.3/32
ip addr del 10.1.1.99/32 dev vec0
say spoof-syslog sent

# A forged IPv6 source.
ip -6 addr add fd00:1::99/128 dev vec0
ok spoof-ipv6 ping -6 -c 1 -W 2 -I fd00:1::99 fd00:1::1
ip -6 addr del fd00:1::99/128 dev vec0

# ARP: the host answers the guest's own address, and not a forged one.
ok arp-own arping -c 1 -w 2 -I vec0 -s "$own" 10.1.1.1
ip addr add 10.1.1.77/32 dev vec0
ok spoof-arp arping -c 1 -w 2 -I vec0 -s 10.1.1.77 10.1.1.1
ip addr del 10.1.1.77/32 dev vec0

# A forged MAC, from a macvlan on vec0 (vec0 itself cannot change its MAC:
# that takes the link down, and the vector driver closes the descriptor it
# was given): a connection the guest may open fails, and works again from
# vec0.
ip link add link vec0 name forged address ` + forgedMAC + ` type macvlan mode private
ip link set forged up
ip route add 10.1.1.1/32 dev forged src "$own"
tcp spoof-mac 10.1.1.1 8081
ip link del forged
tcp host-8081-again 10.1.1.1 8081
say done yes
`

const (
	// goAddress is the address the test adds to br0 when the guests'
	// probes may start.
	goAddress = "10.1.1.2"
	// forgedMAC is the MAC the guest's probe forges.
	forgedMAC = "02:00:00:00:00:99"
	// syslogProbe is what the guest's probe sends to syslog servers, and
	// syslogForged what it sends with a forged source.
	syslogProbe  = "UMLSD-SYSLOG-PROBE"
	syslogForged = "UMLSD-SYSLOG-FORGED"
)

// dnsImageFile builds the DNS guest's image, dns.img: busybox, dnsmasq and
// the kernel's IPv6 and macvlan modules, with dnsStartup, dnsServer, dnsProbes, and
// busybox nc listeners on tcp/22 ("guest-22") and tcp/2222 ("guest-2222").
func dnsImageFile(t *testing.T) []byte {
	t.Helper()
	spec := guestimage.Spec{
		Size:     64 << 20,
		Hostname: "dns",
		Programs: []string{"/usr/sbin/dnsmasq"},
		Startup:  dnsStartup,
		Services: []string{
			dnsServer,
			"exec nc -ll -p 22 -e /bin/echo guest-22",
			"exec nc -ll -p 2222 -e /bin/echo guest-2222",
		},
		Files:      append(guestModules(t), guestimage.File{Path: "/etc/umlsd-probes", Mode: 0o755, Data: []byte(dnsProbes)}),
		CtrlAltDel: guestimage.Poweroff,
	}
	img := path.Join(t.TempDir(), "dns.img")
	if err := guestimage.Build(t.Context(), img, spec); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// guestModules are the UML kernel's modules the DNS guest loads, ipv6.ko
// and macvlan.ko, with the modules they depend on, as files of
// /lib/umlsd-modules whose names sort in load order.
func guestModules(t *testing.T) []guestimage.File {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), "linux.uml", "--version").Output()
	if err != nil {
		t.Fatalf("linux.uml --version: %v", err)
	}
	dir := "/usr/lib/uml/modules/" + strings.TrimSpace(string(out))
	dep, err := os.ReadFile(dir + "/modules.dep")
	if err != nil {
		t.Fatalf("the UML kernel's modules: %v", err)
	}
	deps := map[string][]string{}
	for _, line := range strings.Split(string(dep), "\n") {
		if mod, list, ok := strings.Cut(line, ":"); ok {
			deps[mod] = strings.Fields(list)
		}
	}
	var mods []string
	seen := map[string]bool{}
	for _, mod := range []string{"kernel/net/ipv6/ipv6.ko", "kernel/drivers/net/macvlan.ko"} {
		list, ok := deps[mod]
		if !ok {
			t.Fatalf("%s/modules.dep has no %s", dir, mod)
		}
		// modules.dep lists a module's dependencies so that the last one
		// loads first.
		order := append(slices.Clone(list), mod)
		slices.Reverse(order[:len(list)])
		for _, m := range order {
			if !seen[m] {
				seen[m] = true
				mods = append(mods, m)
			}
		}
	}
	var files []guestimage.File
	for i, mod := range mods {
		data, err := os.ReadFile(dir + "/" + mod)
		if err != nil {
			t.Fatalf("the UML kernel's modules: %v", err)
		}
		files = append(files, guestimage.File{Path: fmt.Sprintf("/lib/umlsd-modules/%02d-%s", i, path.Base(mod)), Data: data})
	}
	return files
}

// testNetwork builds the test network inside the machine (see the top of
// this file). The client and upstream are network namespaces.
const testNetwork = `set -eu
sysctl -qw net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1 \
	net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
ip link add br0 type bridge
ip addr add 10.1.1.1/24 dev br0
ip -6 addr add fd00:1::1/64 dev br0 nodad
ip link set br0 up

ip netns add client
ip link add client0 type veth peer name client-br
ip link set client0 netns client
ip link set client-br master br0 up
ip -n client link set lo up
ip -n client addr add 10.1.1.50/24 dev client0
ip -n client -6 addr add fd00:1::50/64 dev client0 nodad
ip -n client link set client0 up
ip -n client route add default via 10.1.1.1
ip -n client -6 route add default via fd00:1::1

ip netns add upstream
ip link add upstream0 type veth peer name upstream-host
ip link set upstream0 netns upstream
ip addr add 10.2.2.1/24 dev upstream-host
ip link set upstream-host up
ip -n upstream link set lo up
ip -n upstream addr add 10.2.2.2/24 dev upstream0
ip -n upstream addr add 10.2.2.3/24 dev upstream0
ip -n upstream link set upstream0 up
ip -n upstream route add default via 10.2.2.1
mkdir -p /run/umlsd-test
`

// udpLog receives datagrams on $1, udp/514, and appends each as a line to
// the file $2.
const udpLog = `$| = 1;
my $s = IO::Socket::INET->new(LocalAddr => $ARGV[0], LocalPort => 514, Proto => "udp") or die "udp $ARGV[0]:514: $!\n";
open(my $f, ">>", $ARGV[1]) or die "$ARGV[1]: $!\n";
$f->autoflush(1);
while (defined($s->recv(my $m, 65536))) { print $f $m, "\n" }`

// listeners are the test network's servers, as transient services in the
// machine: name, network namespace ("" for the machine's), command.
var listeners = []struct{ name, netns, cmd string }{
	{"upstream-dns", "upstream", "dnsmasq --keep-in-foreground --conf-file=/dev/null --pid-file --no-resolv --no-hosts " +
		"--listen-address=10.2.2.2 --bind-interfaces --host-record=www.upstream.test,10.2.2.80 --log-facility=- --log-queries"},
	{"upstream-80", "upstream", "busybox nc -ll -p 80 -e /bin/echo upstream-80"},
	{"logserver-514", "upstream", "perl -MIO::Socket::INET -e '" + udpLog + "' 10.2.2.3 /run/umlsd-test/syslog-10.2.2.3.log"},
	{"upstream-514", "upstream", "perl -MIO::Socket::INET -e '" + udpLog + "' 10.2.2.2 /run/umlsd-test/syslog-10.2.2.2.log"},
	{"host-8080", "", "busybox nc -ll -p 8080 -e /bin/echo host-8080"},
	{"host-8081", "", "busybox nc -ll -p 8081 -e /bin/echo host-8081"},
}

// bootNetwork boots a machine with umlsd installed, dns.img, the given
// guest configurations and `10.2.2.3 logserver` in /etc/hosts, builds the
// test network in it and starts its listeners, and checks that the network
// works without any guest.
func bootNetwork(t *testing.T, configs map[string]string) *testbed.Machine {
	t.Helper()
	testbed.RequireRoot(t)
	testbed.RequireCommands(t, "systemd-nspawn", "make", "go", "linux.uml", "mke2fs", "busybox",
		"dnsmasq", "dig", "ip", "iptables", "ip6tables", "ebtables", "perl", "dmesg")
	hosts, err := os.ReadFile("/etc/hosts")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		imageDir + "/dns.img": dnsImageFile(t),
		"/etc/hosts":          append(hosts, "10.2.2.3\tlogserver\n"...),
	}
	for name, conf := range configs {
		files["/etc/uml/"+name+".conf"] = []byte(conf)
	}
	m := testbed.Boot(t.Context(), t, testbed.Options{Install: true, Files: files})
	m.MustRun(t, "sh", "-c", testNetwork)
	for _, l := range listeners {
		args := []string{"systemd-run", "--quiet", "--unit=umlsd-test-" + l.name}
		if l.netns != "" {
			args = append(args, "--property=NetworkNamespacePath=/run/netns/"+l.netns)
		}
		m.MustRun(t, append(args, "sh", "-c", l.cmd)...)
	}
	// The network works: the client reaches the upstream servers through
	// the machine, and the machine's own listeners.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var errs []string
		if got := dig(t, m, "client", "@10.2.2.2", "www.upstream.test"); got != "10.2.2.80" {
			errs = append(errs, fmt.Sprintf("the upstream DNS server answers www.upstream.test with %q", got))
		}
		for _, c := range []struct{ ns, host, port, want string }{
			{"client", "10.2.2.2", "80", "upstream-80"},
			{"", "10.1.1.1", "8080", "host-8080"},
			{"", "10.1.1.1", "8081", "host-8081"},
		} {
			if got := connect(t, m, c.ns, c.host, c.port); got != c.want {
				errs = append(errs, fmt.Sprintf("%s:%s from %q answers %q, want %q", c.host, c.port, c.ns, got, c.want))
			}
		}
		if len(errs) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the test network does not work without any guest:\n%s\n%s", strings.Join(errs, "\n"), netState(t, m))
		}
		time.Sleep(200 * time.Millisecond)
	}
	return m
}

// inNetns is a command run in a network namespace of the machine, or in
// the machine's own for netns "".
func inNetns(netns string, args ...string) []string {
	if netns == "" {
		return args
	}
	return append([]string{"ip", "netns", "exec", netns}, args...)
}

// dig asks a DNS server from a network namespace of the machine and
// returns the answer's addresses (dig +short), or what went wrong.
func dig(t testing.TB, m *testbed.Machine, netns string, args ...string) string {
	t.Helper()
	args = append([]string{"dig", "+short", "+time=2", "+tries=2"}, args...)
	out, _, err := m.Run(t.Context(), inNetns(netns, args...)...)
	if err != nil {
		return fmt.Sprintf("%s(%v)", out, err)
	}
	return strings.TrimSpace(out)
}

// connect opens a TCP connection from a network namespace of the machine
// and returns the line the listener sent, or "" when the connection failed
// within 2 s.
func connect(t testing.TB, m *testbed.Machine, netns, host, port string) string {
	t.Helper()
	out, _, _ := m.Run(t.Context(), inNetns(netns, "busybox", "nc", "-w", "2", host, port)...)
	return strings.TrimSpace(out)
}

// netState is the machine's links and firewall, for failure messages.
func netState(t testing.TB, m *testbed.Machine) string {
	t.Helper()
	var b strings.Builder
	for _, cmd := range [][]string{
		{"ip", "-br", "link"}, {"ip", "-br", "addr"}, {"bridge", "link"},
		{"iptables-save", "-c"}, {"ip6tables-save", "-c"},
		{"ebtables", "-t", "filter", "-L", "--Lc"}, {"ebtables", "-t", "nat", "-L", "--Lc"},
	} {
		out, stderr, err := m.Run(t.Context(), cmd...)
		fmt.Fprintf(&b, "$ %s\n%s", strings.Join(cmd, " "), out)
		if err != nil {
			fmt.Fprintf(&b, "(%v: %s)\n", err, stderr)
		}
	}
	return b.String()
}

// unitContext is a guest unit's status and journal, and the machine's
// network, for failure messages.
func unitContext(t *testing.T, m *testbed.Machine, unit string) string {
	t.Helper()
	return fmt.Sprintf("status:\n%s\njournal:\n%s\n%s", status(t, m, unit), journal(t, m, "-u", unit), netState(t, m))
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
	mac, arp       int    // ebtables BASE-link: by source MAC, and ARP
	linkTable      string // the ebtables table of BASE-link
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

// linkChain lists the guest's ebtables chain with its counters, from the
// table that holds it.
func linkChain(t *testing.T, m *testbed.Machine, chain string) (table, listing string) {
	t.Helper()
	for _, table := range ebtablesTables {
		if out, _, err := m.Run(t.Context(), "ebtables", "-t", table, "-L", chain, "--Lc"); err == nil {
			return table, out
		}
	}
	t.Fatalf("no ebtables table has the chain %s:\n%s", chain, netState(t, m))
	return "", ""
}

// ebtablesTables are the ebtables tables a guest's chain may be in (a table
// nothing has used does not exist).
var ebtablesTables = []string{"filter", "nat"}

var ebtablesDrop = regexp.MustCompile(`-j DROP , pcnt = (\d+) `)

func drops(t *testing.T, m *testbed.Machine, name string) dropCounts {
	t.Helper()
	var d dropCounts
	var l4, l6 string
	d.spoof4, l4 = iptablesDrops(t, m, "iptables", "raw", "uml-"+name+"-spoof")
	d.spoof6, l6 = iptablesDrops(t, m, "ip6tables", "raw", "uml-"+name+"-spoof")
	table, link := linkChain(t, m, "uml-"+name+"-link")
	d.linkTable = table
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
	d.listing = fmt.Sprintf("%s%s$ ebtables -t %s -L uml-%s-link --Lc\n%s", l4, l6, table, name, link)
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

// dnsGuestConf is a DNS guest's configuration: its addresses, its
// [Firewall] section and more kernel words.
func dnsGuestConf(firewall, words string, addrs ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "[Guest]\nRootImage=%s/dns.img\nMemory=64M\nReady=tcp:53\nKernelArguments=umlsd.addr=%s %s\n", imageDir, strings.Join(addrs, ","), words)
	b.WriteString("[Network]\nBridge=br0\n")
	for _, a := range addrs {
		fmt.Fprintf(&b, "Address=%s\n", a)
	}
	b.WriteString("[Firewall]\n" + firewall)
	return b.String()
}

// bastion is the classic DNS bastion's policy.
const bastion = `AcceptIn=udp/53 tcp/53
ConnectOut=udp/53@!10.1.1.0/24 tcp/53@!10.1.1.0/24 udp/514@logserver
ConnectOut=tcp/8081@10.1.1.1
HostAccess=tcp/22
`

// TestNetworkDNSGuest: a DNS bastion on a bridge answers DNS from the
// bridge over IPv4 and IPv6, forwards to its upstream server, is reachable
// from the host only on tcp/22, may open only what ConnectOut= lists, and
// cannot forge IPv4 or IPv6 sources, its MAC or ARP: each is dropped,
// counted and logged. Ready=tcp:53 waits for the server. Neither a stop nor
// a stop after kill -9 of the supervisor leaves anything behind.
func TestNetworkDNSGuest(t *testing.T) {
	m := bootNetwork(t, map[string]string{
		"dns":     dnsGuestConf(bastion, "umlsd.probes", "10.1.1.10/24", "fd00:1::10/64"),
		"slowdns": dnsGuestConf("AcceptIn=udp/53 tcp/53\n", "umlsd.slowdns", "10.1.1.14/24"),
		"killed":  dnsGuestConf(bastion+"[Service]\nRestart=no\n", "umlsd.none", "10.1.1.15/24", "fd00:1::15/64"),
	})
	kernelLog := hostKernelLog(t)
	const unit = "uml@dns.service"
	t.Logf("systemctl start %s took %v", unit, timedStart(t, m, unit).Round(time.Millisecond))
	before := drops(t, m, "dns")
	m.MustRun(t, "ip", "addr", "add", goAddress+"/24", "dev", "br0")
	probes := probeResults(t, m, unit)
	after := drops(t, m, "dns")
	t.Logf("the guest's probes: %v; uml-dns-link is in the ebtables table %s", probes, after.linkTable)

	t.Run("DNS from the bridge", func(t *testing.T) {
		for _, q := range []struct{ server, name, want string }{
			{"@10.1.1.10", "dns.test", "10.1.1.10"},
			{"@fd00:1::10", "dns.test", "10.1.1.10"},
			{"@10.1.1.10", "www.upstream.test", "10.2.2.80"},
		} {
			for _, proto := range []string{"+notcp", "+tcp"} {
				if got := dig(t, m, "client", proto, q.server, q.name); got != q.want {
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
				if got := connect(t, m, c.netns, addr, c.port); got != c.want {
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
		if !strings.Contains(logged, syslogProbe+" from dns") {
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
				[]string{"uml-dns spoof: ", forgedMAC}},
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
		if logged := m.MustRun(t, "cat", "/run/umlsd-test/syslog-10.2.2.3.log"); strings.Contains(logged, syslogForged) {
			t.Errorf("the log server got the guest's syslog message from a forged source:\n%s", logged)
		}
		if t.Failed() {
			t.Logf("before the probes:\n%s\nafter:\n%s\nhost kernel log:\n%s", before.listing, after.listing, log)
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
		if got := dig(t, m, "client", "+tcp", "@10.1.1.14", "dns.test"); got != "10.1.1.10" {
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
		if got := dig(t, m, "client", "@10.1.1.10", "dns.test"); got != "10.1.1.10" {
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
	m := bootNetwork(t, map[string]string{
		"a": dnsGuestConf("AcceptIn=udp/53\nConnectOut=udp/53@10.1.1.12 tcp/22@10.1.1.12\n",
			"umlsd.probes umlsd.peer=10.1.1.12", "10.1.1.11/24"),
		"b": dnsGuestConf("AcceptIn=udp/53 tcp/53 tcp/2222\n", "umlsd.probes umlsd.peer=10.1.1.11", "10.1.1.12/24"),
	})
	m.MustRun(t, "systemctl", "start", "uml@a.service", "uml@b.service")
	// What B accepts, it accepts from the client.
	if got := dig(t, m, "client", "+tcp", "@10.1.1.12", "dns.test"); got != "10.1.1.10" {
		t.Errorf("dig +tcp @10.1.1.12 from the client: %q", got)
	}
	if got := connect(t, m, "client", "10.1.1.12", "2222"); got != "guest-2222" {
		t.Errorf("B's tcp/2222 from the client: %q, want guest-2222", got)
	}
	if got := dig(t, m, "client", "@10.1.1.11", "dns.test"); got != "10.1.1.10" {
		t.Errorf("dig @10.1.1.11 from the client: %q", got)
	}
	m.MustRun(t, "ip", "addr", "add", goAddress+"/24", "dev", "br0")
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
		configs[name] = dnsGuestConf("AcceptIn=udp/53 tcp/53\n", "umlsd.none", fmt.Sprintf("10.1.1.%d/24", 20+i))
		units = append(units, "uml@"+name+".service")
	}
	m := bootNetwork(t, configs)
	start := time.Now()
	if _, stderr, err := m.Run(t.Context(), append([]string{"systemctl", "start"}, units...)...); err != nil {
		t.Fatalf("systemctl start of %d guests: %v\n%s\n%s", n, err, stderr, netState(t, m))
	}
	t.Logf("systemctl start of %d guests took %v", n, time.Since(start).Round(time.Millisecond))
	for i, unit := range units {
		if got := show(t, m, unit, "ActiveState"); got != "active" {
			t.Errorf("%s is %s:\n%s", unit, got, unitContext(t, m, unit))
			continue
		}
		if got := dig(t, m, "client", fmt.Sprintf("@10.1.1.%d", 20+i), "dns.test"); got != "10.1.1.10" {
			t.Errorf("%s answers %q:\n%s", unit, got, unitContext(t, m, unit))
		}
	}
	m.MustRun(t, append([]string{"systemctl", "stop"}, units...)...)
	for i := range n {
		requireNoNetworkLeft(t, m, fmt.Sprintf("g%d", i))
	}
}
