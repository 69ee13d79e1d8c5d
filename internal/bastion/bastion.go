// Package bastion is the DNS bastion of the design, as the end-to-end
// tests and make demo run it: a guest image with Debian's dnsmasq, and a
// test network in a throwaway systemd machine (internal/testbed) for it to
// live on. For tests and the demo only.
//
// The DNS guest (dnsmasq) runs on a bridge inside a throwaway machine:
//
//	client netns ── veth ── br0 (10.1.1.1/24, fd00:1::1/64) ── tap ── guest (vec0)
//	                          │ the machine routes
//	upstream netns ── veth ── 10.2.2.1/24
//	(10.2.2.2: DNS server for upstream.test, tcp/80, udp/514; 10.2.2.3: logserver, udp/514)
//
// The machine itself listens on tcp/8080 and tcp/8081. Every listener
// answers a connection with one line naming itself, so that a client knows
// whom it reached. No traffic leaves the machine.
package bastion

import (
	"fmt"
	"os"
	"path"
	"strings"
	"testing"
	"time"

	"umlsd/guestimage"
	"umlsd/internal/testbed"
)

// Image is where the DNS guest's image is in the machine: not under /tmp,
// which PrivateTmp= hides from the unit.
const Image = "/var/lib/uml/images/dns.img"

// dnsStartup configures the guest's network from its kernel words
// (umlsd.addr=ADDR/PREFIX,...) and starts the probes (umlsd.probes) in the
// background.
const dnsStartup = `args=" $(cat /proc/cmdline) "
has() { case "$args" in *" umlsd.$1 "*) return 0;; esac; return 1; }
arg() { for w in $args; do case "$w" in "umlsd.$1="*) echo "${w#*=}"; return;; esac; done; }
echo "UMLSD-BOOTED"
# ARP requests always come from the guest's own address, whatever address
# the packet that needs them comes from; IPv6 addresses are used at once (no
# duplicate address detection: busybox ip has no nodad) and kept while vec0
# is down. (umlsd's kernel has IPv6 built in: the image carries no module.)
sysctl -qw net.ipv4.conf.all.arp_announce=2 \
	net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 net.ipv6.conf.vec0.accept_dad=0 \
	net.ipv6.conf.vec0.keep_addr_on_down=1
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
// for GoAddress. With umlsd.peer=ADDR it probes another guest instead.
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
until arping -q -c 1 -w 1 -I vec0 -s "$own" ` + GoAddress + ` >/dev/null 2>&1; do
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
logger -t umlsd-probe "` + SyslogProbe + ` from $(hostname)"
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
logger -t umlsd-probe "` + SyslogForged + ` from $(hostname)"
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

# A forged MAC: vec0 takes another for a while (it goes down and up for
# that, which umlsd's kernel allows): a connection the guest may open
# fails, and works again with the guest's own MAC.
setmac() {
	ip link set vec0 down
	ip link set vec0 address "$1"
	ip link set vec0 up
	ip route add default via 10.1.1.1
}
mac=$(cat /sys/class/net/vec0/address)
setmac ` + ForgedMAC + `
tcp spoof-mac 10.1.1.1 8081
setmac "$mac"
tcp host-8081-again 10.1.1.1 8081
say done yes
`

const (
	// GoAddress is the address the test adds to br0 when the guests'
	// probes may start.
	GoAddress = "10.1.1.2"
	// ForgedMAC is the MAC the guest's probe forges.
	ForgedMAC = "02:00:00:00:00:99"
	// SyslogProbe is what the guest's probe sends to syslog servers, and
	// SyslogForged what it sends with a forged source.
	SyslogProbe  = "UMLSD-SYSLOG-PROBE"
	SyslogForged = "UMLSD-SYSLOG-FORGED"
)

// imageFile builds the DNS guest's image, dns.img: busybox and dnsmasq,
// with dnsStartup, dnsServer, dnsProbes, and busybox nc listeners on
// tcp/22 ("guest-22") and tcp/2222 ("guest-2222").
func imageFile(t *testing.T) []byte {
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
		Files:      []guestimage.File{{Path: "/etc/umlsd-probes", Mode: 0o755, Data: []byte(dnsProbes)}},
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

// Boot boots a machine with umlsd installed, dns.img, the given
// guest configurations and `10.2.2.3 logserver` in /etc/hosts, builds the
// test network in it and starts its listeners, and checks that the network
// works without any guest; then sets the FORWARD policy to DROP.
func Boot(t *testing.T, configs map[string]string) *testbed.Machine {
	t.Helper()
	testbed.RequireRoot(t)
	testbed.RequireCommands(t, "systemd-nspawn", "make", "go", "mke2fs", "busybox",
		"dnsmasq", "dig", "ip", "iptables", "ip6tables", "ebtables", "perl", "dmesg")
	hosts, err := os.ReadFile("/etc/hosts")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		Image:        imageFile(t),
		"/etc/hosts": append(hosts, "10.2.2.3\tlogserver\n"...),
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
		if got := Dig(t, m, "client", "@10.2.2.2", "www.upstream.test"); got != "10.2.2.80" {
			errs = append(errs, fmt.Sprintf("the upstream DNS server answers www.upstream.test with %q", got))
		}
		for _, c := range []struct{ ns, host, port, want string }{
			{"client", "10.2.2.2", "80", "upstream-80"},
			{"", "10.1.1.1", "8080", "host-8080"},
			{"", "10.1.1.1", "8081", "host-8081"},
		} {
			if got := Connect(t, m, c.ns, c.host, c.port); got != c.want {
				errs = append(errs, fmt.Sprintf("%s:%s from %q answers %q, want %q", c.host, c.port, c.ns, got, c.want))
			}
		}
		if len(errs) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the test network does not work without any guest:\n%s\n%s", strings.Join(errs, "\n"), NetState(t, m))
		}
		time.Sleep(200 * time.Millisecond)
	}
	// From now on the machine forwards nothing by itself, as a host with
	// Docker does not: what the guests' policies allow must pass anyway.
	for _, cmd := range []string{"iptables", "ip6tables"} {
		m.MustRun(t, cmd, "-P", "FORWARD", "DROP")
	}
	return m
}

// InNetns is a command run in a network namespace of the machine, or in
// the machine's own for netns "".
func InNetns(netns string, args ...string) []string {
	if netns == "" {
		return args
	}
	return append([]string{"ip", "netns", "exec", netns}, args...)
}

// dig asks a DNS server from a network namespace of the machine and
// returns the answer's addresses (dig +short), or what went wrong.
func Dig(t testing.TB, m *testbed.Machine, netns string, args ...string) string {
	t.Helper()
	args = append([]string{"dig", "+short", "+time=2", "+tries=2"}, args...)
	out, _, err := m.Run(t.Context(), InNetns(netns, args...)...)
	if err != nil {
		return fmt.Sprintf("%s(%v)", out, err)
	}
	return strings.TrimSpace(out)
}

// connect opens a TCP connection from a network namespace of the machine
// and returns the line the listener sent, or "" when the connection failed
// within 2 s.
func Connect(t testing.TB, m *testbed.Machine, netns, host, port string) string {
	t.Helper()
	out, _, _ := m.Run(t.Context(), InNetns(netns, "busybox", "nc", "-w", "2", host, port)...)
	return strings.TrimSpace(out)
}

// netState is the machine's links and firewall, for failure messages.
func NetState(t testing.TB, m *testbed.Machine) string {
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

// GuestConf is a DNS guest's configuration: its addresses, its
// [Firewall] section and more kernel words.
func GuestConf(firewall, words string, addrs ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "[Guest]\nRootImage=%s\nMemory=64M\nReady=tcp:53\nKernelArguments=umlsd.addr=%s %s\n", Image, strings.Join(addrs, ","), words)
	b.WriteString("[Network]\nBridge=br0\n")
	for _, a := range addrs {
		fmt.Fprintf(&b, "Address=%s\n", a)
	}
	b.WriteString("[Firewall]\n" + firewall)
	return b.String()
}

// Policy is the classic DNS bastion's policy, with a port on the host
// (tcp/8081) the guest may open.
const Policy = `AcceptIn=udp/53 tcp/53
ConnectOut=udp/53@!10.1.1.0/24 tcp/53@!10.1.1.0/24 udp/514@logserver
ConnectOut=tcp/8081@10.1.1.1
HostAccess=tcp/22
`
