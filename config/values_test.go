package config

import (
	"math"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const (
	errTimespanText = `is not a time span; write it as systemd does, such as 90s, 2min or "1h 30s", or infinity`
	errSizeText     = "is not a size; write a whole number with K, M or G, such as 256M"
)

func TestParseTimespan(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Timespan
		wantErr string
	}{
		{in: "90s", want: Timespan{D: 90 * time.Second}},
		{in: "2min", want: Timespan{D: 2 * time.Minute}},
		{in: "2 min", want: Timespan{D: 2 * time.Minute}},
		{in: "1h 5s", want: Timespan{D: time.Hour + 5*time.Second}},
		{in: "1h5s", want: Timespan{D: time.Hour + 5*time.Second}},
		{in: "1.5s", want: Timespan{D: 1500 * time.Millisecond}},
		{in: "0.25min", want: Timespan{D: 15 * time.Second}},
		{in: "500ms", want: Timespan{D: 500 * time.Millisecond}},
		{in: "30", want: Timespan{D: 30 * time.Second}},
		{in: "1.5", want: Timespan{D: 1500 * time.Millisecond}},
		{in: "1h 30", want: Timespan{D: time.Hour + 30*time.Second}},
		{in: " 3 hours\t2 minutes ", want: Timespan{D: 3*time.Hour + 2*time.Minute}},
		{in: "1d", want: Timespan{D: 24 * time.Hour}},
		{in: "2w", want: Timespan{D: 14 * 24 * time.Hour}},
		{in: "1M", want: Timespan{D: 2629800 * time.Second}},
		{in: "1y", want: Timespan{D: 31557600 * time.Second}},
		{in: "1m", want: Timespan{D: time.Minute}},
		{in: "7us 3µs 2ns", want: Timespan{D: 10*time.Microsecond + 2}},
		{in: "0", want: Timespan{}},
		{in: "infinity", want: Timespan{Infinite: true}},
		{in: "9223372036854775807ns", want: Timespan{D: math.MaxInt64}},
		{in: "292y 98d", want: Timespan{D: (292*31557600 + 98*86400) * time.Second}},
		{in: "106751d 23h 47min 16s 854ms 775us 807ns", want: Timespan{D: math.MaxInt64}},
		{in: "", wantErr: errTimespanText},
		{in: "  ", wantErr: errTimespanText},
		{in: "5 parsecs", wantErr: errTimespanText},
		{in: "-1s", wantErr: errTimespanText},
		{in: "1..5s", wantErr: errTimespanText},
		{in: "1.5.5s", wantErr: errTimespanText},
		{in: "s", wantErr: errTimespanText},
		{in: "1e3s", wantErr: errTimespanText},
		{in: "Infinity", wantErr: errTimespanText},
		{in: "1 sec 2 parsecs", wantErr: errTimespanText},
		{in: "300y", wantErr: "is too long; use infinity for no limit"},
		{in: "106751d 23h 47min 16s 854ms 775us 808ns", wantErr: "is too long; use infinity for no limit"},
		{in: "292y 99d", wantErr: "is too long; use infinity for no limit"},
	} {
		got, err := ParseTimespan(tc.in)
		if diff := cmp.Diff(tc.wantErr, errText(err)); diff != "" {
			t.Errorf("ParseTimespan(%q) error (-want +got):\n%s", tc.in, diff)
			continue
		}
		if diff := cmp.Diff(tc.want, got); err == nil && diff != "" {
			t.Errorf("ParseTimespan(%q) (-want +got):\n%s", tc.in, diff)
		}
	}
}

func TestFormatTimespan(t *testing.T) {
	for _, tc := range []struct {
		in   Timespan
		want string
	}{
		{Timespan{Infinite: true}, "infinity"},
		{Timespan{}, "0"},
		{Timespan{D: 90 * time.Second}, "1min 30s"},
		{Timespan{D: 30 * time.Second}, "30s"},
		{Timespan{D: 1500 * time.Millisecond}, "1s 500ms"},
		{Timespan{D: 25*time.Hour + 1}, "1d 1h 1ns"},
		{Timespan{D: 14 * 24 * time.Hour}, "14d"},
		{Timespan{D: time.Microsecond}, "1us"},
		{Timespan{D: math.MaxInt64}, "106751d 23h 47min 16s 854ms 775us 807ns"},
		{Timespan{D: math.MaxInt64 - 1}, "106751d 23h 47min 16s 854ms 775us 806ns"},
	} {
		got := FormatTimespan(tc.in)
		if got != tc.want {
			t.Errorf("FormatTimespan(%v) = %q, want %q", tc.in.D, got, tc.want)
		}
		if got != tc.in.String() {
			t.Errorf("Timespan.String() = %q, FormatTimespan %q", tc.in.String(), got)
		}
		back, err := ParseTimespan(got)
		if err != nil || back != tc.in {
			t.Errorf("ParseTimespan(%q) = %v, %v; want %v", got, back, err, tc.in)
		}
	}
}

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    uint64
		wantErr string
	}{
		{in: "0", want: 0},
		{in: "4096", want: 4096},
		{in: "1K", want: 1 << 10},
		{in: "1k", want: 1 << 10},
		{in: "256M", want: 256 << 20},
		{in: "256m", want: 256 << 20},
		{in: "2G", want: 2 << 30},
		{in: "2g", want: 2 << 30},
		{in: "0128M", want: 128 << 20},
		{in: "18446744073709551615", want: math.MaxUint64},
		{in: "17179869183G", want: math.MaxUint64 - (1<<30 - 1)},
		{in: "", wantErr: errSizeText},
		{in: "M", wantErr: errSizeText},
		{in: "1.5G", wantErr: errSizeText},
		{in: "-1M", wantErr: errSizeText},
		{in: "+1M", wantErr: errSizeText},
		{in: "1T", wantErr: errSizeText},
		{in: "1 M", wantErr: errSizeText},
		{in: "1MB", wantErr: errSizeText},
		{in: "1_000", wantErr: errSizeText},
		{in: "0x10", wantErr: errSizeText},
		{in: "18446744073709551616", wantErr: errSizeText},
		{in: "17179869184G", wantErr: "is too large"},
		{in: "18014398509481984K", wantErr: "is too large"},
	} {
		got, err := ParseSize(tc.in)
		if diff := cmp.Diff(tc.wantErr, errText(err)); diff != "" {
			t.Errorf("ParseSize(%q) error (-want +got):\n%s", tc.in, diff)
			continue
		}
		if err == nil && got != tc.want {
			t.Errorf("ParseSize(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestFormatSize(t *testing.T) {
	for _, tc := range []struct {
		in   uint64
		want string
	}{
		{0, "0"},
		{1, "1"},
		{1023, "1023"},
		{1024, "1K"},
		{1536, "1536"},
		{16 << 20, "16M"},
		{128 << 20, "128M"},
		{1 << 30, "1G"},
		{3 << 30, "3G"},
		{1<<30 + 1<<20, "1025M"},
		{1<<30 + 1<<10, "1048577K"},
		{math.MaxUint64, "18446744073709551615"},
	} {
		got := FormatSize(tc.in)
		if got != tc.want {
			t.Errorf("FormatSize(%d) = %q, want %q", tc.in, got, tc.want)
		}
		if back, err := ParseSize(got); err != nil || back != tc.in {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", got, back, err, tc.in)
		}
	}
}

func TestParseBool(t *testing.T) {
	for _, s := range []string{"1", "yes", "y", "true", "t", "on", "YES", "True", "On"} {
		if v, err := ParseBool(s); err != nil || !v {
			t.Errorf("ParseBool(%q) = %v, %v; want true", s, v, err)
		}
	}
	for _, s := range []string{"0", "no", "n", "false", "f", "off", "NO", "Off"} {
		if v, err := ParseBool(s); err != nil || v {
			t.Errorf("ParseBool(%q) = %v, %v; want false", s, v, err)
		}
	}
	for _, s := range []string{"", "2", "maybe", "yes please", "enable"} {
		if _, err := ParseBool(s); errText(err) != "is not a boolean; use yes or no" {
			t.Errorf("ParseBool(%q) error = %v", s, err)
		}
	}
}

func TestParsePath(t *testing.T) {
	const (
		relative = "is not an absolute path; start it with /"
		space    = "contains white space, which the kernel command line cannot carry; rename the file or use a symbolic link"
		quote    = "contains a quote or a backslash, which systemd would interpret; rename the file or use a symbolic link"
		comma    = "contains a comma, which UML's ubd option uses as a separator; rename the file or use a symbolic link"
	)
	for _, tc := range []struct {
		in      string
		noComma bool
		want    string
		wantErr string
	}{
		{in: "/srv/dns.img", want: "/srv/dns.img"},
		{in: "/srv//uml/./a/../dns.img/", want: "/srv/uml/dns.img"},
		{in: "/", want: "/"},
		{in: "/srv/a,b.img", want: "/srv/a,b.img"},
		{in: "/srv/a,b.img", noComma: true, wantErr: comma},
		{in: "/srv/a:b.img", noComma: true, want: "/srv/a:b.img"},
		{in: "", wantErr: relative},
		{in: "srv/dns.img", wantErr: relative},
		{in: "./dns.img", wantErr: relative},
		{in: "~/dns.img", wantErr: relative},
		{in: "/srv/my dns.img", wantErr: space},
		{in: "/srv/my\tdns.img", wantErr: space},
		{in: `/srv/"dns".img`, wantErr: quote},
		{in: `/srv/dns's.img`, wantErr: quote},
		{in: `/srv/dns\x20.img`, wantErr: quote},
	} {
		got, err := ParsePath(tc.in, tc.noComma)
		if diff := cmp.Diff(tc.wantErr, errText(err)); diff != "" {
			t.Errorf("ParsePath(%q, %v) error (-want +got):\n%s", tc.in, tc.noComma, diff)
			continue
		}
		if err == nil && got != tc.want {
			t.Errorf("ParsePath(%q, %v) = %q, want %q", tc.in, tc.noComma, got, tc.want)
		}
	}
}

func TestParseInterfaceName(t *testing.T) {
	const bad = "is not an interface name; use letters, digits, dashes, underscores and dots"
	for _, tc := range []struct{ in, wantErr string }{
		{"br0", ""},
		{"uml-dns", ""},
		{"br.100", ""},
		{"abcdefghijklmno", ""},
		{"abcdefghijklmnop", "is longer than the 15 bytes Linux allows for an interface name"},
		{"", "is not an interface name"},
		{".", "is not an interface name"},
		{"..", "is not an interface name"},
		{"br 0", bad},
		{"br/0", bad},
		{"br:0", bad},
		{"br%d", bad},
		{"brü", bad},
	} {
		got, err := ParseInterfaceName(tc.in)
		if diff := cmp.Diff(tc.wantErr, errText(err)); diff != "" {
			t.Errorf("ParseInterfaceName(%q) error (-want +got):\n%s", tc.in, diff)
		}
		if err == nil && got != tc.in {
			t.Errorf("ParseInterfaceName(%q) = %q", tc.in, got)
		}
	}
}

func TestParseMAC(t *testing.T) {
	const bad = "is not a MAC address; write it as xx:xx:xx:xx:xx:xx"
	for _, tc := range []struct{ in, want, wantErr string }{
		{in: "52:54:00:12:34:56", want: "52:54:00:12:34:56"},
		{in: "52:54:00:AB:CD:EF", want: "52:54:00:ab:cd:ef"},
		{in: "02:00:00:00:00:01", want: "02:00:00:00:00:01"},
		{in: "52-54-00-12-34-56", want: "52:54:00:12:34:56"},
		{in: "5254.0012.3456", wantErr: bad},
		{in: "52:54:00:12:34", wantErr: bad},
		{in: "52:54:00:12:34:56:78:9a", wantErr: bad},
		{in: "52:54:00:12:34:5g", wantErr: bad},
		{in: "", wantErr: bad},
		{in: "01:00:5e:00:00:01", wantErr: "is a multicast address; a guest needs a unicast one (the lowest bit of the first byte clear)"},
		{in: "ff:ff:ff:ff:ff:ff", wantErr: "is a multicast address; a guest needs a unicast one (the lowest bit of the first byte clear)"},
		{in: "00:00:00:00:00:00", wantErr: "is the all-zero address; choose another or leave MAC= out to derive one"},
	} {
		got, err := ParseMAC(tc.in)
		if diff := cmp.Diff(tc.wantErr, errText(err)); diff != "" {
			t.Errorf("ParseMAC(%q) error (-want +got):\n%s", tc.in, diff)
		}
		if err == nil && got.String() != tc.want {
			t.Errorf("ParseMAC(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestDefaultMAC(t *testing.T) {
	seen := map[string]string{}
	for _, name := range []string{"dns", "web", "mail", "a", "b", "dns1", "dns2", strings.Repeat("z", 32)} {
		m := DefaultMAC(name)
		checkGuestMAC(t, m)
		if again := DefaultMAC(name); again.String() != m.String() {
			t.Errorf("DefaultMAC(%q) not stable: %s, then %s", name, m, again)
		}
		if other, dup := seen[m.String()]; dup {
			t.Errorf("DefaultMAC(%q) = DefaultMAC(%q) = %s", name, other, m)
		}
		seen[m.String()] = name
		if _, err := ParseMAC(m.String()); err != nil {
			t.Errorf("DefaultMAC(%q) = %s, which ParseMAC refuses: %v", name, m, err)
		}
	}
}

func TestParseAddress(t *testing.T) {
	const (
		notAddr   = "is not an IPv4 or IPv6 address"
		notPrefix = "is not an address with prefix length; write it as 10.1.1.10/24 or 2001:db8::10/64"
		notOwn    = "is not an address a guest can own (unspecified, loopback or multicast)"
	)
	for _, tc := range []struct{ in, want, wantErr string }{
		{in: "10.1.1.10", want: "10.1.1.10/32"},
		{in: "10.1.1.10/24", want: "10.1.1.10/24"},
		{in: "2001:db8::10", want: "2001:db8::10/128"},
		{in: "2001:db8::10/64", want: "2001:db8::10/64"},
		{in: "fe80::10", want: "fe80::10/128"},
		{in: "10.1.1.10/33", wantErr: notPrefix},
		{in: "10.1.1.10/", wantErr: notPrefix},
		{in: "10.1.1/24", wantErr: notPrefix},
		{in: "10.1.1", wantErr: notAddr},
		{in: "10.1.1.256", wantErr: notAddr},
		{in: "dns.example.org", wantErr: notAddr},
		{in: "fe80::1%eth0", wantErr: notAddr},
		{in: "", wantErr: notAddr},
		{in: "::ffff:10.1.1.10", wantErr: "is an IPv4-mapped IPv6 address; write the IPv4 address"},
		{in: "0.0.0.0", wantErr: notOwn},
		{in: "::", wantErr: notOwn},
		{in: "127.0.0.1", wantErr: notOwn},
		{in: "::1/128", wantErr: notOwn},
		{in: "239.1.1.1", wantErr: notOwn},
		{in: "ff02::1", wantErr: notOwn},
	} {
		got, err := ParseAddress(tc.in)
		if diff := cmp.Diff(tc.wantErr, errText(err)); diff != "" {
			t.Errorf("ParseAddress(%q) error (-want +got):\n%s", tc.in, diff)
		}
		if err == nil && got.String() != tc.want {
			t.Errorf("ParseAddress(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestParseReady(t *testing.T) {
	const (
		notReady = "is not a readiness condition; use kernel, console:REGEX, tcp:PORT or notify"
		badPort  = "has no valid port; write tcp:PORT with PORT from 1 to 65535"
	)
	for _, tc := range []struct {
		in      string
		want    Ready
		wantErr string
	}{
		{in: "kernel", want: Ready{Kind: ReadyKernel}},
		{in: "notify", want: Ready{Kind: ReadyNotify}},
		{in: "console:login:", want: Ready{Kind: ReadyConsole, Pattern: regexp.MustCompile("login:")}},
		{in: "console:^Welcome to .* [0-9]+$", want: Ready{Kind: ReadyConsole, Pattern: regexp.MustCompile("^Welcome to .* [0-9]+$")}},
		{in: "tcp:22", want: Ready{Kind: ReadyTCP, Port: 22}},
		{in: "tcp:65535", want: Ready{Kind: ReadyTCP, Port: 65535}},
		{in: "", wantErr: notReady},
		{in: "Kernel", wantErr: notReady},
		{in: "kernel:1", wantErr: notReady},
		{in: "notify:x", wantErr: notReady},
		{in: "console", wantErr: notReady},
		{in: "console:", wantErr: notReady},
		{in: "udp:53", wantErr: notReady},
		{in: "console:a(b", wantErr: "has an invalid regular expression: error parsing regexp: missing closing ): `a(b`"},
		{in: "console:*", wantErr: "has an invalid regular expression: error parsing regexp: missing argument to repetition operator: `*`"},
		{in: "tcp", wantErr: badPort},
		{in: "tcp:", wantErr: badPort},
		{in: "tcp:0", wantErr: badPort},
		{in: "tcp:65536", wantErr: badPort},
		{in: "tcp:+22", wantErr: badPort},
		{in: "tcp:-1", wantErr: badPort},
		{in: "tcp:ssh", wantErr: badPort},
	} {
		got, err := ParseReady(tc.in)
		if diff := cmp.Diff(tc.wantErr, errText(err)); diff != "" {
			t.Errorf("ParseReady(%q) error (-want +got):\n%s", tc.in, diff)
			continue
		}
		if err != nil {
			continue
		}
		if diff := cmp.Diff(tc.want, got, valueOpts); diff != "" {
			t.Errorf("ParseReady(%q) (-want +got):\n%s", tc.in, diff)
		}
		if got.String() != tc.in {
			t.Errorf("ParseReady(%q).String() = %q", tc.in, got.String())
		}
	}
}

func TestParseRule(t *testing.T) {
	tcp := func(from, to uint16, peer *Peer) Rule {
		return Rule{Proto: TCP, FromPort: from, ToPort: to, Peer: peer}
	}
	addr := func(s string, not bool) *Peer { return &Peer{Not: not, Prefix: prefix(s)} }
	const notRule = "is not a rule; write PROTO/PORT[@PEER] with PROTO tcp, udp or icmp, such as tcp/22@10.0.0.0/8"
	icmpTypes := "echo-request, echo-reply, destination-unreachable, time-exceeded, parameter-problem, packet-too-big, redirect, router-advertisement, router-solicitation"
	for _, tc := range []struct {
		in         string
		hostAccess bool // parse as HostAccess=, without peer
		want       Rule
		str        string // Rule.String when it differs from in
		wantErr    string
	}{
		{in: "tcp/22", want: tcp(22, 22, nil)},
		{in: "udp/53", want: Rule{Proto: UDP, FromPort: 53, ToPort: 53}},
		{in: "tcp/1000-2000", want: tcp(1000, 2000, nil)},
		{in: "tcp/1-65535", want: tcp(1, 65535, nil)},
		{in: "tcp/22-22", want: tcp(22, 22, nil), str: "tcp/22"},
		{in: "tcp/022", want: tcp(22, 22, nil), str: "tcp/22"},
		{in: "tcp/2000-1000", wantErr: "has the port range 2000-1000 backwards; write 1000-2000"},
		{in: "tcp/0", wantErr: `has the port "0"; a port is a number from 1 to 65535`},
		{in: "udp/65536", wantErr: `has the port "65536"; a port is a number from 1 to 65535`},
		{in: "tcp/1-65536", wantErr: `has the port "65536"; a port is a number from 1 to 65535`},
		{in: "tcp/0-10", wantErr: `has the port "0"; a port is a number from 1 to 65535`},
		{in: "tcp/ssh", wantErr: `has the port "ssh"; a port is a number from 1 to 65535`},
		{in: "tcp/", wantErr: `has the port ""; a port is a number from 1 to 65535`},
		{in: "tcp/1-", wantErr: `has the port ""; a port is a number from 1 to 65535`},
		{in: "tcp/+22", wantErr: `has the port "+22"; a port is a number from 1 to 65535`},
		{in: "tcp", wantErr: "has no port; write tcp/PORT or tcp/FROM-TO"},
		{in: "udp@10.0.0.1", wantErr: "has no port; write udp/PORT or udp/FROM-TO"},
		{in: "icmp", want: Rule{Proto: ICMP}},
		{in: "icmp/echo-request", want: Rule{Proto: ICMP, ICMPType: "echo-request"}},
		{in: "icmp/packet-too-big", want: Rule{Proto: ICMP, ICMPType: "packet-too-big"}},
		{in: "icmp/8", want: Rule{Proto: ICMP, ICMPType: "8"}},
		{in: "icmp/0", want: Rule{Proto: ICMP, ICMPType: "0"}},
		{in: "icmp/255", want: Rule{Proto: ICMP, ICMPType: "255"}},
		{in: "icmp/256", wantErr: `has the unknown icmp type "256"; use a number or one of ` + icmpTypes},
		{in: "icmp/08", wantErr: `has the unknown icmp type "08"; use a number or one of ` + icmpTypes},
		{in: "icmp/ping", wantErr: `has the unknown icmp type "ping"; use a number or one of ` + icmpTypes},
		{in: "icmp/", wantErr: `has the unknown icmp type ""; use a number or one of ` + icmpTypes},
		{in: "sctp/22", wantErr: notRule},
		{in: "TCP/22", wantErr: notRule},
		{in: "", wantErr: notRule},
		{in: "22", wantErr: notRule},
		{in: "@10.0.0.1", wantErr: notRule},

		// Peers.
		{in: "tcp/22@10.0.0.1", want: tcp(22, 22, addr("10.0.0.1/32", false))},
		{in: "tcp/22@10.0.0.1/32", want: tcp(22, 22, addr("10.0.0.1/32", false)), str: "tcp/22@10.0.0.1"},
		{in: "tcp/22@2001:db8::1", want: tcp(22, 22, addr("2001:db8::1/128", false))},
		{in: "tcp/22@10.0.0.0/8", want: tcp(22, 22, addr("10.0.0.0/8", false))},
		{in: "tcp/22@2001:db8::/32", want: tcp(22, 22, addr("2001:db8::/32", false))},
		{in: "tcp/22@0.0.0.0/0", want: tcp(22, 22, addr("0.0.0.0/0", false))},
		{in: "udp/53@!10.1.1.0/24", want: Rule{Proto: UDP, FromPort: 53, ToPort: 53, Peer: addr("10.1.1.0/24", true)}},
		{in: "tcp/22@!10.0.0.1", want: tcp(22, 22, addr("10.0.0.1/32", true))},
		{in: "udp/514@logserver", want: Rule{Proto: UDP, FromPort: 514, ToPort: 514, Peer: &Peer{Host: "logserver"}}},
		{in: "tcp/443@www.example.org", want: tcp(443, 443, &Peer{Host: "www.example.org"})},
		{in: "tcp/443@www.example.org.", want: tcp(443, 443, &Peer{Host: "www.example.org."})},
		{in: "tcp/443@!my-host.example.org", want: tcp(443, 443, &Peer{Not: true, Host: "my-host.example.org"})},
		{in: "icmp@10.0.0.0/8", want: Rule{Proto: ICMP, Peer: addr("10.0.0.0/8", false)}},
		{in: "icmp/echo-request@!gw", want: Rule{Proto: ICMP, ICMPType: "echo-request", Peer: &Peer{Not: true, Host: "gw"}}},
		{in: "tcp/22@10.0.0.1/8", wantErr: "has the peer 10.0.0.1/8 with host bits set; did you mean 10.0.0.0/8?"},
		{in: "tcp/22@!2001:db8::1/32", wantErr: "has the peer 2001:db8::1/32 with host bits set; did you mean 2001:db8::/32?"},
		{in: "tcp/22@10.0.0.0/33", wantErr: `has the peer "10.0.0.0/33", which is not a CIDR such as 10.1.1.0/24`},
		{in: "tcp/22@host/24", wantErr: `has the peer "host/24", which is not a CIDR such as 10.1.1.0/24`},
		{in: "tcp/22@fe80::1%eth0", wantErr: `has the peer "fe80::1%eth0" with a zone, which a firewall rule cannot use`},
		{in: "tcp/22@::ffff:10.0.0.1", wantErr: "has the peer ::ffff:10.0.0.1, an IPv4-mapped IPv6 address; write the IPv4 address 10.0.0.1"},
		{in: "tcp/22@!::ffff:10.0.0.0/104", wantErr: "has the peer ::ffff:10.0.0.0/104, an IPv4-mapped IPv6 range; write it as an IPv4 CIDR"},
		{in: "tcp/22@bad_host", wantErr: `has the peer "bad_host", which is neither an address, a CIDR nor a host name`},
		{in: "tcp/22@-host", wantErr: `has the peer "-host", which is neither an address, a CIDR nor a host name`},
		{in: "tcp/22@host-", wantErr: `has the peer "host-", which is neither an address, a CIDR nor a host name`},
		{in: "tcp/22@10.1.1", wantErr: `has the peer "10.1.1", which is neither an address, a CIDR nor a host name`},
		{in: "tcp/22@10.1.1.256", wantErr: `has the peer "10.1.1.256", which is neither an address, a CIDR nor a host name`},
		{in: "tcp/22@ns1.example.org", want: Rule{Proto: TCP, FromPort: 22, ToPort: 22, Peer: &Peer{Host: "ns1.example.org"}}},
		{in: "tcp/22@a..b", wantErr: `has the peer "a..b", which is neither an address, a CIDR nor a host name`},
		{in: "tcp/22@!!host", wantErr: `has the peer "!host", which is neither an address, a CIDR nor a host name`},
		{in: "tcp/22@" + strings.Repeat("a", 64), wantErr: `has the peer "` + strings.Repeat("a", 64) + `", which is neither an address, a CIDR nor a host name`},
		{in: "tcp/22@", wantErr: "has an empty peer after @; write an address, a CIDR or a host name"},
		{in: "tcp/22@!", wantErr: "has an empty peer after @; write an address, a CIDR or a host name"},

		// HostAccess= rules have no peer.
		{in: "tcp/22", hostAccess: true, want: tcp(22, 22, nil)},
		{in: "tcp/22@10.0.0.1", hostAccess: true, wantErr: "names a peer, but HostAccess= rules always mean the host itself; remove @10.0.0.1"},
		{in: "icmp@!gw", hostAccess: true, wantErr: "names a peer, but HostAccess= rules always mean the host itself; remove @!gw"},
	} {
		withPeer := !tc.hostAccess
		got, err := ParseRule(tc.in, withPeer)
		if diff := cmp.Diff(tc.wantErr, errText(err)); diff != "" {
			t.Errorf("ParseRule(%q, %v) error (-want +got):\n%s", tc.in, withPeer, diff)
			continue
		}
		if err != nil {
			continue
		}
		if diff := cmp.Diff(tc.want, got, valueOpts); diff != "" {
			t.Errorf("ParseRule(%q) (-want +got):\n%s", tc.in, diff)
		}
		str := tc.str
		if str == "" {
			str = tc.in
		}
		if got.String() != str {
			t.Errorf("ParseRule(%q).String() = %q, want %q", tc.in, got.String(), str)
		}
		back, err := ParseRule(got.String(), withPeer)
		if err != nil {
			t.Errorf("ParseRule(%q) of Rule.String failed: %v", got.String(), err)
		} else if diff := cmp.Diff(got, back, valueOpts); diff != "" {
			t.Errorf("Rule.String round trip of %q (-before +after):\n%s", tc.in, diff)
		}
	}
}
