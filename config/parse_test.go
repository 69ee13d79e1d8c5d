package config

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestParseKeys checks every key of every section: its default when it is
// not written and what a valid value turns into.
func TestParseKeys(t *testing.T) {
	runGuestCases(t, []guestCase{
		{"defaults", withGuest(), func(*Guest) {}},

		// [Guest]
		{"Description", withGuest("Description=DNS bastion, the one"), func(g *Guest) {
			g.Description = "DNS bastion, the one"
		}},
		{"Kernel", withGuest("Kernel=/opt/uml//linux-6.1/"), func(g *Guest) { g.Kernel, g.KernelIsDefault = "/opt/uml/linux-6.1", false }},
		{"Kernel may contain a comma", withGuest("Kernel=/opt/uml,1/linux"), func(g *Guest) { g.Kernel, g.KernelIsDefault = "/opt/uml,1/linux", false }},
		{"RootImage last wins and is cleaned", withGuest("RootImage=/srv/uml/../img/dns.img"), func(g *Guest) {
			g.RootImage = "/srv/img/dns.img"
		}},
		{"Cow", withGuest("Cow=/var/lib/uml/dns/other.cow"), func(g *Guest) { g.Cow = "/var/lib/uml/dns/other.cow" }},
		{"Cow=no", withGuest("Cow=no"), func(g *Guest) { g.Cow = "" }},
		{"Disk", withGuest("Disk=/srv/data.img /srv/ro.img:ro", "Disk=/srv/more.img"), func(g *Guest) {
			g.Disks = []Disk{{"/srv/data.img", false}, {"/srv/ro.img", true}, {"/srv/more.img", false}}
		}},
		{"Disk read-only named :ro", withGuest("Disk=/srv/x:ro:ro /srv/y:ro/.:ro"), func(g *Guest) {
			g.Disks = []Disk{{"/srv/x:ro", true}, {"/srv/y:ro", true}}
		}},
		{"Memory M", withGuest("Memory=256M"), func(g *Guest) { g.Memory = 256 << 20 }},
		{"Memory G", withGuest("Memory=2G"), func(g *Guest) { g.Memory = 2 << 30 }},
		{"Memory minimum in K", withGuest("Memory=16384K"), func(g *Guest) { g.Memory = 16 << 20 }},
		{"Memory in bytes", withGuest("Memory=33554432"), func(g *Guest) { g.Memory = 32 << 20 }},
		{"User name", withGuest("User=dns"), func(g *Guest) { g.User, g.UserIsDefault = "dns", false }},
		{"User uid", withGuest("User=1000"), func(g *Guest) { g.User, g.UserIsDefault = "1000", false }},
		{"User written as the default", withGuest("User=uml-dns"), func(g *Guest) { g.UserIsDefault = false }},
		{"Group name", withGuest("Group=uml"), func(g *Guest) { g.Group = "uml" }},
		{"Group gid", withGuest("Group=1000"), func(g *Guest) { g.Group = "1000" }},
		{"Chroot=no", withGuest("Chroot=no"), func(g *Guest) { g.Chroot = false }},
		{"Chroot=false", withGuest("Chroot=false"), func(g *Guest) { g.Chroot = false }},
		{"Chroot=yes", withGuest("Chroot=yes"), func(*Guest) {}},
		{"KernelArguments", withGuest("KernelArguments=init=/bin/sh quiet", "KernelArguments=console=tty0 rootfstype=ext4"), func(g *Guest) {
			g.KernelArguments = []string{"init=/bin/sh", "quiet", "console=tty0", "rootfstype=ext4"}
		}},
		{"KernelArguments near managed ones", withGuest("KernelArguments=memmap=1G consoleblank=0 ethtool=x rootdelay=2 umid_x=1"), func(g *Guest) {
			g.KernelArguments = []string{"memmap=1G", "consoleblank=0", "ethtool=x", "rootdelay=2", "umid_x=1"}
		}},
		{"Ready=kernel", withGuest("Ready=kernel"), func(*Guest) {}},
		{"Ready=notify", withGuest("Ready=notify"), func(g *Guest) { g.Ready = Ready{Kind: ReadyNotify} }},
		{"Ready=console", withGuest("Ready=console:^login: $"), func(g *Guest) {
			g.Ready = Ready{Kind: ReadyConsole, Pattern: regexp.MustCompile("^login: $")}
		}},
		{"Ready=tcp", withGuest("Ready=tcp:53", "[Network]", "Bridge=br0", "Address=10.1.1.10"), func(g *Guest) {
			g.Ready = Ready{Kind: ReadyTCP, Port: 53}
			g.Network = defaultNetwork("dns", "br0", "10.1.1.10/32")
		}},
		{"ReadyTimeout", withGuest("ReadyTimeout=2min"), func(g *Guest) { g.ReadyTimeout = Timespan{D: 2 * time.Minute} }},
		{"ReadyTimeout=infinity", withGuest("ReadyTimeout=infinity"), func(g *Guest) { g.ReadyTimeout = Timespan{Infinite: true} }},
		{"StopTimeout", withGuest("StopTimeout=1h 5s"), func(g *Guest) { g.StopTimeout = Timespan{D: time.Hour + 5*time.Second} }},
		{"StopTimeout=infinity", withGuest("StopTimeout=infinity"), func(g *Guest) { g.StopTimeout = Timespan{Infinite: true} }},

		// [Network]
		{"Network defaults", withGuest("[Network]", "Bridge=br0", "Address=10.1.1.10"), func(g *Guest) {
			g.Network = defaultNetwork("dns", "br0", "10.1.1.10/32")
		}},
		{"Tap", withGuest("[Network]", "Bridge=br0", "Tap=tap-dns", "Address=10.1.1.10"), func(g *Guest) {
			g.Network = defaultNetwork("dns", "br0", "10.1.1.10/32")
			g.Network.Tap = "tap-dns"
		}},
		{"MAC", withGuest("[Network]", "Bridge=br0", "MAC=52:54:00:AB:cd:0e", "Address=10.1.1.10"), func(g *Guest) {
			g.Network = defaultNetwork("dns", "br0", "10.1.1.10/32")
			g.Network.MAC = mac("52:54:00:ab:cd:0e")
		}},
		{"Address list", withGuest("[Network]", "Bridge=br0", "Address=10.1.1.10/24 2001:db8::10/64", "Address=192.0.2.7"), func(g *Guest) {
			g.Network = defaultNetwork("dns", "br0", "10.1.1.10/24", "2001:db8::10/64", "192.0.2.7/32")
		}},
		{"AntiSpoofing=no needs no Address", withGuest("[Network]", "Bridge=br0", "AntiSpoofing=no"), func(g *Guest) {
			g.Network = defaultNetwork("dns", "br0")
			g.Network.AntiSpoofing = false
		}},

		// [Firewall]
		{"Firewall defaults", withGuest("[Network]", "Bridge=br0", "Address=10.1.1.10", "[Firewall]"), func(g *Guest) {
			g.Network = defaultNetwork("dns", "br0", "10.1.1.10/32")
			g.Firewall = &Firewall{Log: true}
		}},
		{"Firewall rules", withGuest("[Network]", "Bridge=br0", "Address=10.1.1.10", "[Firewall]",
			"AcceptIn=tcp/22@10.0.0.0/8 icmp/echo-request", "ConnectOut=udp/1000-2000@!ntp.example.org",
			"HostAccess=tcp/22", "Log=no"), func(g *Guest) {
			g.Network = defaultNetwork("dns", "br0", "10.1.1.10/32")
			g.Firewall = &Firewall{
				AcceptIn: []Rule{
					{Proto: TCP, FromPort: 22, ToPort: 22, Peer: &Peer{Prefix: prefix("10.0.0.0/8")}},
					{Proto: ICMP, ICMPType: "echo-request"},
				},
				ConnectOut: []Rule{{Proto: UDP, FromPort: 1000, ToPort: 2000, Peer: &Peer{Not: true, Host: "ntp.example.org"}}},
				HostAccess: []Rule{{Proto: TCP, FromPort: 22, ToPort: 22}},
				Log:        false,
			}
		}},

		// [Install]
		{"Install", withGuest("[Install]", "WantedBy=multi-user.target uml.target", "WantedBy=multi-user.target", "RequiredBy=getty@tty1.service"), func(g *Guest) {
			g.WantedBy = []string{"multi-user.target", "uml.target"}
			g.RequiredBy = []string{"getty@tty1.service"}
		}},

		// [Unit] and [Service] pass through, in order, empty values too.
		{"Unit and Service", withGuest("[Unit]", "After=network-online.target", "Requires=network-online.target",
			"[Service]", "Restart=on-failure", "MemoryMax=1G", "CPUQuota=50%", "Environment=A=b C=d", "Restart="), func(g *Guest) {
			g.Unit = []Setting{{Key: "After", Value: "network-online.target"}, {Key: "Requires", Value: "network-online.target"}}
			g.Service = []Setting{{Key: "Restart", Value: "on-failure"}, {Key: "MemoryMax", Value: "1G"},
				{Key: "CPUQuota", Value: "50%"}, {Key: "Environment", Value: "A=b C=d"}, {Key: "Restart", Value: ""}}
		}},

		// X- keys and sections are ignored.
		{"X- keys and sections", withGuest("X-Owner=ops", "Memory=1G", "[X-Backup]", "Schedule=daily", "Memory=nonsense",
			"[Network]", "Bridge=br0", "X-VLAN=12", "Address=10.1.1.10", "[Service]", "X-Comment=none"), func(g *Guest) {
			g.Memory = 1 << 30
			g.Network = defaultNetwork("dns", "br0", "10.1.1.10/32")
		}},
	})
}

func TestParseSettingPositions(t *testing.T) {
	g, err := parseFiles("dns",
		"dns.conf", withGuest("[Service]", "Restart=always"),
		"dns.conf.d/10.conf", lines("[Unit]", "", "After=a.service"))
	if err != nil {
		t.Fatal(err)
	}
	want := []Setting{{"After", "a.service", Pos{"dns.conf.d/10.conf", 3}}, {"Restart", "always", Pos{"dns.conf", 4}}}
	if diff := cmp.Diff(want, append(g.Unit, g.Service...)); diff != "" {
		t.Errorf("settings (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"dns.conf.d/10.conf"}, g.DropIns); diff != "" {
		t.Errorf("DropIns (-want +got):\n%s", diff)
	}
	if g.Path != "dns.conf" {
		t.Errorf("Path = %q, want dns.conf", g.Path)
	}
}

func TestDefaultMACOfGuest(t *testing.T) {
	net := func(name string) *Network {
		return mustParse(t, name, withGuest("[Network]", "Bridge=br0", "AntiSpoofing=no")).Network
	}
	a, again, b := net("dns"), net("dns"), net("web")
	if a.MAC.String() != again.MAC.String() {
		t.Errorf("MAC of dns not stable: %s, then %s", a.MAC, again.MAC)
	}
	if a.MAC.String() == b.MAC.String() {
		t.Errorf("dns and web have the same MAC %s", a.MAC)
	}
	for _, m := range []string{a.MAC.String(), b.MAC.String()} {
		checkGuestMAC(t, mac(m))
	}
}

// TestParseErrors pins the complete text of every error a guest's file can
// produce.
func TestParseErrors(t *testing.T) {
	network := func(ls ...string) string {
		return withGuest(append([]string{"[Network]", "Bridge=br0", "Address=10.1.1.10"}, ls...)...)
	}
	// Lines of network() start at 6, inside [Network].
	firewall := func(ls ...string) string { return network(append([]string{"[Firewall]"}, ls...)...) }
	// Lines of firewall() start at 7, inside [Firewall].
	for _, tc := range []struct {
		desc string
		name string // "dns" when empty
		src  string
		want string
	}{
		// Lexical errors.
		{"before any section", "", lines("RootImage=/srv/a.img", "[Guest]", "RootImage=/srv/a.img"),
			"dns.conf:1: RootImage= comes before any section; put it under a [Section] header"},
		{"malformed line", "", withGuest("Memory 128M"),
			`dns.conf:3: "Memory 128M" is neither a Key=Value assignment, a [Section] header nor a comment`},
		{"malformed header", "", withGuest("[Network", "Bridge=br0"),
			`dns.conf:3: "[Network" is not a valid section header; write it as [Name]`},
		{"header with a space", "", withGuest("[Net work]", "Bridge=br0"),
			`dns.conf:3: "[Net work]" is not a valid section header; write it as [Name]`},
		{"malformed first header", "", lines("[Guest", "RootImage=/srv/a.img"),
			`dns.conf:1: "[Guest" is not a valid section header; write it as [Name]` + "\n" +
				"dns.conf:1: RootImage= is missing in [Guest]; set it to the guest's root filesystem image"},
		{"invalid key", "", withGuest("Mem ory=1G"),
			`dns.conf:3: "Mem ory" is not a valid key name; keys are letters, digits and dashes`},
		{"empty key", "", withGuest("=1G"),
			`dns.conf:3: "" is not a valid key name; keys are letters, digits and dashes`},
		{"control character", "", withGuest("Description=a\x01b"),
			"dns.conf:3: the line contains a control character; remove it"},
		{"DEL", "", withGuest("Description=a\x7fb"),
			"dns.conf:3: the line contains a control character; remove it"},
		{"carriage return inside a line", "", withGuest("Description=a\rb"),
			"dns.conf:3: the line contains a control character; remove it"},
		{"C1 control character", "", withGuest("Description=a\u0085b"),
			"dns.conf:3: the line contains a control character; remove it"},
		{"line separator", "", withGuest("Description=a\u2028b"),
			"dns.conf:3: the line contains a control character; remove it"},
		{"not UTF-8", "", withGuest("Description=caf\xe9"),
			"dns.conf:3: the line contains bytes that are not UTF-8; remove it"},
		{"control character in a comment", "", withGuest("# a\x00b"),
			"dns.conf:3: the line contains a control character; remove it"},
		{"comment after a value is part of the value", "", withGuest("Memory=1G # one gig"),
			"dns.conf:3: Memory=1G # one gig is not a size; write a whole number with K, M or G, such as 256M"},

		{"backslash left at the end by a continuation ended by a blank line", "", withGuest(`Description=foo\ \`, "", "Memory=1G"),
			"dns.conf:3: the value of Description= ends with a backslash, which systemd would join with the next line; remove it"},
		{"backslash left at the end by a continuation at the end of the file", "", "[Guest]\nRootImage=/srv/uml/root.img\nDescription=a\\ \\",
			"dns.conf:3: the value of Description= ends with a backslash, which systemd would join with the next line; remove it"},
		{"long value shortened in the error", "", withGuest("Memory=" + strings.Repeat("9", 100)),
			"dns.conf:3: Memory=" + strings.Repeat("9", 64) + "… is not a size; write a whole number with K, M or G, such as 256M"},

		// Unknown sections and keys.
		{"unknown key", "", withGuest("Memroy=1G"),
			"dns.conf:3: Memroy= is not a key of [Guest]; did you mean Memory=?"},
		{"unknown key, wrong case", "", withGuest("memory=1G"),
			"dns.conf:3: memory= is not a key of [Guest]; did you mean Memory=?"},
		{"unknown key without suggestion", "", withGuest("Frobnicate=1"),
			"dns.conf:3: Frobnicate= is not a key of [Guest]"},
		{"key in the wrong section", "", withGuest("Bridge=br0"),
			"dns.conf:3: Bridge= is not a key of [Guest]; Bridge= belongs in [Network]"},
		{"key in the wrong section, wrong case", "", network("hostaccess=tcp/22"),
			"dns.conf:6: hostaccess= is not a key of [Network]; HostAccess= belongs in [Firewall]"},
		{"Install key in [Guest]", "", withGuest("WantedBy=multi-user.target"),
			"dns.conf:3: WantedBy= is not a key of [Guest]; WantedBy= belongs in [Install]"},
		{"unknown section", "", withGuest("[Netwrk]", "Bridge=br0"),
			"dns.conf:3: [Netwrk] is not a section of uml.conf; did you mean [Network]?"},
		{"unknown section without suggestion", "", withGuest("[Hardware]", "CPUs=2"),
			"dns.conf:3: [Hardware] is not a section of uml.conf"},
		{"unknown section reported once", "", withGuest("[Srvice]", "A=1", "[Srvice]", "B=2"),
			"dns.conf:3: [Srvice] is not a section of uml.conf; did you mean [Service]?"},

		// [Guest]
		{"missing RootImage", "", lines("[Guest]", "Memory=1G"),
			"dns.conf:1: RootImage= is missing in [Guest]; set it to the guest's root filesystem image"},
		{"missing RootImage under a later [Guest]", "", lines("# dns", "[Install]", "WantedBy=multi-user.target", "[Guest]"),
			"dns.conf:4: RootImage= is missing in [Guest]; set it to the guest's root filesystem image"},
		{"missing [Guest]", "", "",
			"dns.conf:1: RootImage= is missing in [Guest]; set it to the guest's root filesystem image"},
		{"RootImage reset", "", withGuest("RootImage="),
			"dns.conf:1: RootImage= is missing in [Guest]; set it to the guest's root filesystem image"},
		{"RootImage relative", "", lines("[Guest]", "RootImage=images/dns.img"),
			"dns.conf:2: RootImage=images/dns.img is not an absolute path; start it with /"},
		{"RootImage with white space", "", lines("[Guest]", "RootImage=/srv/my image.img"),
			"dns.conf:2: RootImage=/srv/my image.img contains white space, which the kernel command line cannot carry; rename the file or use a symbolic link"},
		{"RootImage with a tab", "", lines("[Guest]", "RootImage=/srv/my\timage.img"),
			"dns.conf:2: RootImage=/srv/my\timage.img contains white space, which the kernel command line cannot carry; rename the file or use a symbolic link"},
		{"RootImage with a quote", "", lines("[Guest]", `RootImage=/srv/"dns".img`),
			`dns.conf:2: RootImage=/srv/"dns".img contains a quote or a backslash, which systemd would interpret; rename the file or use a symbolic link`},
		{"RootImage with an apostrophe", "", lines("[Guest]", `RootImage=/srv/dns's.img`),
			`dns.conf:2: RootImage=/srv/dns's.img contains a quote or a backslash, which systemd would interpret; rename the file or use a symbolic link`},
		{"RootImage with a comma", "", lines("[Guest]", "RootImage=/srv/a,b.img"),
			"dns.conf:2: RootImage=/srv/a,b.img contains a comma, which UML's ubd option uses as a separator; rename the file or use a symbolic link"},
		{"Kernel relative", "", withGuest("Kernel=linux"),
			"dns.conf:3: Kernel=linux is not an absolute path; start it with /"},
		{"Kernel with a backslash", "", withGuest(`Kernel=/opt/lin\ux`),
			`dns.conf:3: Kernel=/opt/lin\ux contains a quote or a backslash, which systemd would interpret; rename the file or use a symbolic link`},
		{"Cow relative", "", withGuest("Cow=dns.cow"),
			"dns.conf:3: Cow=dns.cow is neither no nor a usable path: it is not an absolute path; start it with /"},
		{"Cow with a comma", "", withGuest("Cow=/var/a,b.cow"),
			"dns.conf:3: Cow=/var/a,b.cow is neither no nor a usable path: it contains a comma, which UML's ubd option uses as a separator; rename the file or use a symbolic link"},
		{"Cow is the root image", "", withGuest("Cow=/srv/uml/./root.img"),
			"dns.conf:3: Cow=/srv/uml/root.img is the root image itself; give the COW file its own path, or write Cow=no"},
		{"default Cow is the root image", "", lines("[Guest]", "RootImage=/var/lib/uml/dns/root.cow"),
			"dns.conf:2: Cow=/var/lib/uml/dns/root.cow is the root image itself; give the COW file its own path, or write Cow=no"},
		{"Disk relative", "", withGuest("Disk=/srv/a.img data.img:ro"),
			"dns.conf:3: Disk=data.img:ro is not an absolute path; start it with /"},
		{"Disk with a comma", "", withGuest("Disk=/srv/a,b.img"),
			"dns.conf:3: Disk=/srv/a,b.img contains a comma, which UML's ubd option uses as a separator; rename the file or use a symbolic link"},
		{"writable Disk named like a read-only one", "", withGuest("Disk=/srv/x:ro/."),
			"dns.conf:3: Disk=/srv/x:ro/. names /srv/x:ro, which ends in :ro like a read-only disk; rename the file or use a symbolic link"},
		{"Disk is the root image", "", withGuest("Disk=" + rootImage + ":ro"),
			"dns.conf:3: Disk=/srv/uml/root.img:ro names /srv/uml/root.img, which this guest already uses; give each disk its own file"},
		{"Disk is the COW file", "", withGuest("Disk=/var/lib/uml/dns/root.cow"),
			"dns.conf:3: Disk=/var/lib/uml/dns/root.cow names /var/lib/uml/dns/root.cow, which this guest already uses; give each disk its own file"},
		{"Disk twice", "", withGuest("Disk=/srv/a.img", "Disk=/srv/b.img /srv//a.img"),
			"dns.conf:4: Disk=/srv//a.img names /srv/a.img, which this guest already uses; give each disk its own file"},
		{"16 disks", "", withGuest("Disk=/d/1 /d/2 /d/3 /d/4 /d/5 /d/6 /d/7 /d/8 /d/9 /d/10 /d/11 /d/12 /d/13 /d/14 /d/15", "Disk=/d/16"),
			"dns.conf:4: Disk=/d/16 is one disk too many; UML has ubd1 to ubd15 for further disks"},
		{"Memory below 16M", "", withGuest("Memory=16383K"),
			"dns.conf:3: Memory=16383K is less than the 16M a guest needs at least"},
		{"Memory zero", "", withGuest("Memory=0"),
			"dns.conf:3: Memory=0 is less than the 16M a guest needs at least"},
		{"Memory with a fraction", "", withGuest("Memory=1.5G"),
			"dns.conf:3: Memory=1.5G is not a size; write a whole number with K, M or G, such as 256M"},
		{"Memory with a unit it does not know", "", withGuest("Memory=1T"),
			"dns.conf:3: Memory=1T is not a size; write a whole number with K, M or G, such as 256M"},
		{"Memory with MB", "", withGuest("Memory=128MB"),
			"dns.conf:3: Memory=128MB is not a size; write a whole number with K, M or G, such as 256M"},
		{"Memory negative", "", withGuest("Memory=-128M"),
			"dns.conf:3: Memory=-128M is not a size; write a whole number with K, M or G, such as 256M"},
		{"Memory too large", "", withGuest("Memory=17179869184G"),
			"dns.conf:3: Memory=17179869184G is too large"},
		{"User=root", "", withGuest("User=root"),
			"dns.conf:3: User=root is root; the guest kernel must run as an unprivileged user"},
		{"User=0", "", withGuest("User=0"),
			"dns.conf:3: User=0 is root; the guest kernel must run as an unprivileged user"},
		{"User=00", "", withGuest("User=00"),
			"dns.conf:3: User=00 is not a valid user id"},
		{"User=-1 as uid", "", withGuest("User=4294967295"),
			"dns.conf:3: User=4294967295 is not a valid user id"},
		{"User with capitals", "", withGuest("User=Admin"),
			"dns.conf:3: User=Admin is not a user name; use lower-case letters, digits, dashes and underscores, at most 32 of them"},
		{"Group=root", "", withGuest("Group=root"),
			"dns.conf:3: Group=root is root; the guest kernel must run as an unprivileged group"},
		{"Group=0", "", withGuest("Group=0"),
			"dns.conf:3: Group=0 is root; the guest kernel must run as an unprivileged group"},
		{"default user too long", strings.Repeat("a", 29), lines("# long", "[Guest]", "RootImage=/srv/a.img"),
			"aaaaaaaaaaaaaaaaaaaaaaaaaaaaa.conf:2: the default user name uml-aaaaaaaaaaaaaaaaaaaaaaaaaaaaa is longer than 32 bytes; set User= in [Guest]"},
		{"Chroot not a boolean", "", withGuest("Chroot=maybe"),
			"dns.conf:3: Chroot=maybe is not a boolean; use yes or no"},
		{"ReadyTimeout not a time span", "", withGuest("ReadyTimeout=5 parsecs"),
			`dns.conf:3: ReadyTimeout=5 parsecs is not a time span; write it as systemd does, such as 90s, 2min or "1h 30s", or infinity`},
		{"ReadyTimeout zero", "", withGuest("ReadyTimeout=0"),
			"dns.conf:3: ReadyTimeout=0 is zero; give a positive time span, or infinity for no limit"},
		{"StopTimeout zero", "", withGuest("StopTimeout=0s 0ms"),
			"dns.conf:3: StopTimeout=0s 0ms is zero; give a positive time span, or infinity for no limit"},
		{"StopTimeout negative", "", withGuest("StopTimeout=-5s"),
			`dns.conf:3: StopTimeout=-5s is not a time span; write it as systemd does, such as 90s, 2min or "1h 30s", or infinity`},
		{"StopTimeout too long", "", withGuest("StopTimeout=300y"),
			"dns.conf:3: StopTimeout=300y is too long; use infinity for no limit"},
		{"Ready unknown", "", withGuest("Ready=ssh"),
			"dns.conf:3: Ready=ssh is not a readiness condition; use kernel, console:REGEX, tcp:PORT or notify"},
		{"Ready=console without pattern", "", withGuest("Ready=console:"),
			"dns.conf:3: Ready=console: is not a readiness condition; use kernel, console:REGEX, tcp:PORT or notify"},
		{"Ready=console with an invalid pattern", "", withGuest("Ready=console:login(:"),
			"dns.conf:3: Ready=console:login(: has an invalid regular expression: error parsing regexp: missing closing ): `login(:`"},
		{"Ready=tcp without port", "", withGuest("Ready=tcp"),
			"dns.conf:3: Ready=tcp has no valid port; write tcp:PORT with PORT from 1 to 65535"},
		{"Ready=tcp:0", "", withGuest("Ready=tcp:0"),
			"dns.conf:3: Ready=tcp:0 has no valid port; write tcp:PORT with PORT from 1 to 65535"},
		{"Ready=tcp:65536", "", withGuest("Ready=tcp:65536"),
			"dns.conf:3: Ready=tcp:65536 has no valid port; write tcp:PORT with PORT from 1 to 65535"},
		{"Ready=tcp without [Network]", "", withGuest("Ready=tcp:22"),
			"dns.conf:3: Ready=tcp:22 needs the guest's address; add a [Network] section with Address="},
		{"Ready=tcp without Address", "", withGuest("Ready=tcp:22", "[Network]", "Bridge=br0", "AntiSpoofing=no"),
			"dns.conf:3: Ready=tcp:22 needs the guest's address; add Address= to [Network]"},

		// [Network]
		{"missing Bridge", "", withGuest("[Network]", "Address=10.1.1.10"),
			"dns.conf:3: Bridge= is missing in [Network]; name the existing bridge the guest's tap joins"},
		{"missing Address", "", withGuest("[Network]", "Bridge=br0"),
			"dns.conf:3: Address= is missing in [Network]; list the guest's addresses, or set AntiSpoofing=no to let it use any"},
		{"Address reset", "", network("Address="),
			"dns.conf:3: Address= is missing in [Network]; list the guest's addresses, or set AntiSpoofing=no to let it use any"},
		{"Bridge too long", "", withGuest("[Network]", "Bridge=br-0123456789abc", "Address=10.1.1.10"),
			"dns.conf:4: Bridge=br-0123456789abc is longer than the 15 bytes Linux allows for an interface name"},
		{"Tap with a slash", "", network("Tap=tap/0"),
			"dns.conf:6: Tap=tap/0 is not an interface name; use letters, digits, dashes, underscores and dots"},
		{"default tap too long", "abcdefghijkl", withGuest("[Network]", "Bridge=br0", "Address=10.1.1.10"),
			"abcdefghijkl.conf:3: the default tap name uml-abcdefghijkl is longer than 15 bytes; set Tap= in [Network]"},
		{"MAC multicast", "", network("MAC=01:00:5e:00:00:01"),
			"dns.conf:6: MAC=01:00:5e:00:00:01 is a multicast address; a guest needs a unicast one (the lowest bit of the first byte clear)"},
		{"MAC all zero", "", network("MAC=00:00:00:00:00:00"),
			"dns.conf:6: MAC=00:00:00:00:00:00 is the all-zero address; choose another or leave MAC= out to derive one"},
		{"MAC dotted", "", network("MAC=5254.0012.3456"),
			"dns.conf:6: MAC=5254.0012.3456 is not a MAC address; write it as xx:xx:xx:xx:xx:xx"},
		{"MAC too long", "", network("MAC=52:54:00:12:34:56:78:9a"),
			"dns.conf:6: MAC=52:54:00:12:34:56:78:9a is not a MAC address; write it as xx:xx:xx:xx:xx:xx"},
		{"Address not an address", "", network("Address=dns.example.org"),
			"dns.conf:6: Address=dns.example.org is not an IPv4 or IPv6 address"},
		{"Address with a zone", "", network("Address=fe80::1%eth0"),
			"dns.conf:6: Address=fe80::1%eth0 is not an IPv4 or IPv6 address"},
		{"Address with a bad prefix", "", network("Address=10.1.1.11/33"),
			"dns.conf:6: Address=10.1.1.11/33 is not an address with prefix length; write it as 10.1.1.10/24 or 2001:db8::10/64"},
		{"Address mapped", "", network("Address=::ffff:10.1.1.11"),
			"dns.conf:6: Address=::ffff:10.1.1.11 is an IPv4-mapped IPv6 address; write the IPv4 address"},
		{"Address loopback", "", network("Address=127.0.0.2"),
			"dns.conf:6: Address=127.0.0.2 is not an address a guest can own (unspecified, loopback or multicast)"},
		{"Address unspecified", "", network("Address=::"),
			"dns.conf:6: Address=:: is not an address a guest can own (unspecified, loopback or multicast)"},
		{"Address multicast", "", network("Address=224.0.0.1/4"),
			"dns.conf:6: Address=224.0.0.1/4 is not an address a guest can own (unspecified, loopback or multicast)"},
		{"Address twice", "", network("Address=10.1.1.10/24"),
			"dns.conf:6: Address=10.1.1.10/24 is listed twice; remove one"},
		{"AntiSpoofing not a boolean", "", network("AntiSpoofing=sometimes"),
			"dns.conf:6: AntiSpoofing=sometimes is not a boolean; use yes or no"},

		// [Firewall]
		{"[Firewall] without [Network]", "", withGuest("[Firewall]", "AcceptIn=tcp/22"),
			"dns.conf:3: [Firewall] filters the guest's network, but there is no [Network] section; add one or remove [Firewall]"},
		{"AcceptIn bad rule", "", firewall("AcceptIn=tcp/22 ssh"),
			"dns.conf:7: AcceptIn=ssh is not a rule; write PROTO/PORT[@PEER] with PROTO tcp, udp or icmp, such as tcp/22@10.0.0.0/8"},
		{"ConnectOut bad port", "", firewall("ConnectOut=udp/0"),
			`dns.conf:7: ConnectOut=udp/0 has the port "0"; a port is a number from 1 to 65535`},
		{"HostAccess with a peer", "", firewall("HostAccess=tcp/22@10.0.0.1"),
			"dns.conf:7: HostAccess=tcp/22@10.0.0.1 names a peer, but HostAccess= rules always mean the host itself; remove @10.0.0.1"},
		{"Log not a boolean", "", firewall("Log=loud"),
			"dns.conf:7: Log=loud is not a boolean; use yes or no"},

		// [Install]
		{"WantedBy not a unit", "", withGuest("[Install]", "WantedBy=multi-user"),
			"dns.conf:4: WantedBy=multi-user is not a unit name such as multi-user.target"},
		{"RequiredBy template", "", withGuest("[Install]", "RequiredBy=getty@.target"),
			"dns.conf:4: RequiredBy=getty@.target is a template; name an instance such as foo@bar.target"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			name := tc.name
			if name == "" {
				name = "dns"
			}
			g, err := parse(name, tc.src)
			if diff := cmp.Diff(tc.want, errText(err)); diff != "" {
				t.Errorf("error (-want +got):\n%s\nfile:\n%s", diff, tc.src)
			}
			if err != nil && g != nil {
				t.Errorf("Parse returned a guest beside the error")
			}
			if _, ok := err.(Errors); err != nil && !ok {
				t.Errorf("error is %T, want Errors", err)
			}
		})
	}
}

// TestParseFixedByKey checks that the errors about a default are gone when
// the key is written.
func TestParseFixedByKey(t *testing.T) {
	long := strings.Repeat("a", 29)
	for _, tc := range []struct{ name, src string }{
		{"abcdefghijk", withGuest("[Network]", "Bridge=br0", "Address=10.1.1.10")}, // 15 bytes: fits
		{"abcdefghijkl", withGuest("[Network]", "Bridge=br0", "Tap=uml-abcdefghi", "Address=10.1.1.10")},
		{strings.Repeat("a", 28), withGuest()}, // uml- and 28 bytes: fits
		{long, withGuest("User=" + long)},
		{"dns", withGuest("RootImage=/var/lib/uml/dns/root.cow", "Cow=no")},
		{"dns", withGuest("Ready=tcp:22", "[Network]", "Bridge=br0", "AntiSpoofing=no", "Address=10.1.1.10")},
	} {
		if _, err := parse(tc.name, tc.src); err != nil {
			t.Errorf("Parse(%q) failed: %v\nfile:\n%s", tc.name, err, tc.src)
		}
	}
}

func TestParseKernelArgumentsOutsideASCIIOrQuoted(t *testing.T) {
	for _, arg := range []string{`init="/bin/sh`, "caf\u00e9", "x=\u00e0"} {
		t.Run(arg, func(t *testing.T) {
			_, err := parse("dns", withGuest("KernelArguments="+arg))
			want := fmt.Sprintf("dns.conf:3: KernelArguments=%s contains a double quote or characters outside ASCII, which the kernel would read across words; remove them", arg)
			checkError(t, want, err)
		})
	}
}

func TestParseTapNamedLikeItsBridge(t *testing.T) {
	_, err := parse("dns", guestConf("10.1.1.10", "Tap=br0"))
	checkError(t, "dns.conf:6: the tap br0 has the name of the bridge; uml-supervisor deletes the tap when the guest stops, so choose another Tap=", err)
}

func TestParseManagedKernelArguments(t *testing.T) {
	for _, arg := range []string{
		"mem=64M", "root=/dev/ubda", "ubd0=/srv/x.img", "ubd1r=/srv/x.img", "ubda=/srv/x.img", "ubdb=/srv/x.img", "ubd=3",
		"con=null", "con0=fd:0,fd:1", "ssl=pts", "ssl1=pts", "eth0=tuntap,tap0", "vec0:transport=tap,ifname=tap0",
		"umid=other", "uml_dir=/tmp", "mconsole=notify:/tmp/x", "hostfs=/", "mem",
	} {
		t.Run(arg, func(t *testing.T) {
			_, err := parse("dns", withGuest("KernelArguments=quiet "+arg))
			want := fmt.Sprintf("dns.conf:3: KernelArguments=%s is set by uml-supervisor from the configuration; remove it", arg)
			checkError(t, want, err)
		})
	}
}

func TestParseRefusedPassThrough(t *testing.T) {
	const (
		main     = "uml-supervisor is the unit's main process and owns how the guest is started and stopped"
		account  = "uml-supervisor must start as root to prepare the host and drops privileges itself; set User= and Group= in [Guest] instead"
		jail     = "uml-supervisor builds the guest's jail itself; see Chroot= in [Guest]"
		sandbox  = "it would keep uml-supervisor from preparing the guest's network, devices and jail"
		kernel   = "the UML kernel needs writable executable memory and ptrace and would not boot"
		timeouts = "the generator derives it from ReadyTimeout= and StopTimeout= in [Guest]; set those instead"
	)
	for _, tc := range []struct {
		section string
		keys    []string
		why     string
	}{
		{"Unit", []string{"Description"}, "set Description= in [Guest] instead"},
		{"Unit", []string{"SourcePath"}, "the generator points it at this file"},
		{"Service", []string{"Type", "ExecStart", "ExecStop", "ExecStopPost", "NotifyAccess", "KillMode", "KillSignal",
			"RestartKillSignal", "SendSIGKILL", "PIDFile", "RemainAfterExit", "GuessMainPID", "BusName"}, main},
		{"Service", []string{"User", "Group", "DynamicUser"}, account},
		{"Service", []string{"RootDirectory", "RootImage"}, jail},
		{"Service", []string{"PrivateNetwork", "NetworkNamespacePath", "PrivateDevices", "PrivateUsers",
			"RestrictAddressFamilies", "CapabilityBoundingSet", "ProtectKernelTunables", "RestrictNamespaces",
			"DevicePolicy", "DeviceAllow", "ProcSubset", "SecureBits"}, sandbox},
		{"Service", []string{"ProtectSystem", "ProtectHome"},
			"uml@.service sets what uml-supervisor tolerates; stricter settings keep it from creating the guest's account in /etc and from reaching the images"},
		{"Service", []string{"MemoryDenyWriteExecute", "SystemCallFilter"}, kernel},
		{"Service", []string{"LockPersonality", "Personality"},
			"uml-supervisor runs the kernel without address randomisation, so that the guest gets all its memory, and locks that personality itself"},
		{"Service", []string{"TimeoutSec", "TimeoutStartSec", "TimeoutStopSec"}, timeouts},
	} {
		for _, key := range tc.keys {
			t.Run(tc.section+"/"+key, func(t *testing.T) {
				_, err := parse("dns", withGuest("["+tc.section+"]", key+"=x"))
				want := fmt.Sprintf("dns.conf:4: %s= cannot be set in [%s]: %s", key, tc.section, tc.why)
				checkError(t, want, err)
			})
		}
	}
}

// TestParseErrorOrder checks that every error of every file is reported,
// in the order of the files and their lines, whichever stage found it.
func TestParseErrorOrder(t *testing.T) {
	main := lines(
		"[Guest]",             // 1
		"Memroy=1G",           // 2: unknown key
		"RootImage=relative",  // 3: invalid value
		"[Bogus]",             // 4: unknown section
		"Foo=bar",             // 5: not reported again
		"[Network]",           // 6
		"Bridge=br0",          // 7
		"garbage",             // 8: malformed
		"Address=10.1.1.300",  // 9: invalid list item
		"Tap=a\x01",           // 10: control character
		"[Firewall]",          // 11
		"AcceptIn=tcp/99999",  // 12: invalid rule
		"KernelArguments=x=y", // 13: key of [Guest] in [Firewall]
	)
	dropIn := lines(
		"[Guest]",     // 1
		"Memory=1K",   // 2: too small
		"Ready=tcp:0", // 3: invalid
	)
	_, err := parseFiles("dns", "dns.conf", main, "dns.conf.d/10.conf", dropIn)
	want := strings.Join([]string{
		"dns.conf:2: Memroy= is not a key of [Guest]; did you mean Memory=?",
		"dns.conf:3: RootImage=relative is not an absolute path; start it with /",
		"dns.conf:4: [Bogus] is not a section of uml.conf",
		`dns.conf:8: "garbage" is neither a Key=Value assignment, a [Section] header nor a comment`,
		"dns.conf:9: Address=10.1.1.300 is not an IPv4 or IPv6 address",
		"dns.conf:10: the line contains a control character; remove it",
		`dns.conf:12: AcceptIn=tcp/99999 has the port "99999"; a port is a number from 1 to 65535`,
		"dns.conf:13: KernelArguments= is not a key of [Firewall]; KernelArguments= belongs in [Guest]",
		"dns.conf.d/10.conf:2: Memory=1K is less than the 16M a guest needs at least",
		"dns.conf.d/10.conf:3: Ready=tcp:0 has no valid port; write tcp:PORT with PORT from 1 to 65535",
	}, "\n")
	if diff := cmp.Diff(want, errText(err)); diff != "" {
		t.Errorf("errors (-want +got):\n%s", diff)
	}
	errs, ok := err.(Errors)
	if !ok || len(errs) != 10 {
		t.Fatalf("error is %T with %d errors, want Errors with 10", err, len(errs))
	}
	if want := (Pos{"dns.conf.d/10.conf", 3}); errs[9].Pos != want {
		t.Errorf("last error at %v, want %v", errs[9].Pos, want)
	}
}

func TestParseSyntax(t *testing.T) {
	runGuestCases(t, []guestCase{
		{"comments and blank lines", lines(
			"# DNS bastion", "; another comment", "", "   # indented comment", "[Guest]", "",
			"RootImage="+rootImage, "\t", "Memory=1G", "#Memory=2G", ";Memory=3G"),
			func(g *Guest) { g.Memory = 1 << 30 }},
		{"surrounding white space", lines("  [Guest]  ", "\tRootImage = "+rootImage+" \t", "Description =  a  b  "),
			func(g *Guest) { g.Description = "a  b" }},
		{"continuation joined with a space", withGuest(`KernelArguments=init=/bin/sh\`, `  quiet`, `Description=DNS\`, `bastion`),
			func(g *Guest) {
				g.KernelArguments = []string{"init=/bin/sh", "quiet"}
				g.Description = "DNS bastion"
			}},
		{"continuation over three lines", withGuest(`Description=one \`, `two \`, `three`),
			func(g *Guest) { g.Description = "one  two  three" }},
		{"comment inside a continuation", withGuest(`KernelArguments=init=/bin/sh \`, `# a comment`, `; another`, `quiet`),
			func(g *Guest) { g.KernelArguments = []string{"init=/bin/sh", "quiet"} }},
		{"continuation ended by a blank line", withGuest(`Description=DNS \`, ``, `Memory=1G`),
			func(g *Guest) { g.Description, g.Memory = "DNS", 1<<30 }},
		{"continuation at the end of the file", "[Guest]\nRootImage=" + rootImage + "\nKernelArguments=quiet \\",
			func(g *Guest) { g.KernelArguments = []string{"quiet"} }},
		{"continuation at the end of the file with newline", withGuest(`KernelArguments=quiet \`),
			func(g *Guest) { g.KernelArguments = []string{"quiet"} }},
		{"CRLF", strings.ReplaceAll(withGuest("Memory=1G", `Description=a \`, "b", "[Network]", "Bridge=br0", "Address=10.1.1.10"), "\n", "\r\n"),
			func(g *Guest) {
				g.Memory, g.Description = 1<<30, "a  b"
				g.Network = defaultNetwork("dns", "br0", "10.1.1.10/32")
			}},
		{"no newline at the end", "[Guest]\nRootImage=" + rootImage + "\nMemory=1G",
			func(g *Guest) { g.Memory = 1 << 30 }},
		{"value with = and #", withGuest("Description=a=b # c"),
			func(g *Guest) { g.Description = "a=b # c" }},
		{"repeated sections merge", lines("[Guest]", "RootImage="+rootImage, "[Network]", "Bridge=br0",
			"[Guest]", "Memory=1G", "[Network]", "Address=10.1.1.10"),
			func(g *Guest) {
				g.Memory = 1 << 30
				g.Network = defaultNetwork("dns", "br0", "10.1.1.10/32")
			}},
		{"escaped backslash at the end is not a continuation", withGuest(`Description=C:\\`, "Memory=1G"),
			func(g *Guest) { g.Description, g.Memory = `C:\\`, 1<<30 }},
		{"three backslashes: an escaped one and a continuation", withGuest(`Description=C:\\\`, "D"),
			func(g *Guest) { g.Description = `C:\\ D` }},
		{"byte-order mark at the start", "\ufeff" + withGuest("Memory=1G"),
			func(g *Guest) { g.Memory = 1 << 30 }},
		{"non-ASCII text", withGuest("Description=Gästebuch – ünïcödé"),
			func(g *Guest) { g.Description = "Gästebuch – ünïcödé" }},
	})
}

// TestParseAssignments checks list and single-valued keys over a main file
// and drop-ins.
func TestParseAssignments(t *testing.T) {
	for _, tc := range []struct {
		desc  string
		files []string // main file, then drop-ins
		want  func(g *Guest)
	}{
		{"list accumulates over lines and words",
			[]string{withGuest("Disk=/d/1 /d/2", "Disk=/d/3", "KernelArguments=a b", "KernelArguments=c")},
			func(g *Guest) {
				g.Disks = []Disk{{"/d/1", false}, {"/d/2", false}, {"/d/3", false}}
				g.KernelArguments = []string{"a", "b", "c"}
			}},
		{"list accumulates over drop-ins",
			[]string{withGuest("Disk=/d/1"), lines("[Guest]", "Disk=/d/2:ro"), lines("[Guest]", "Disk=/d/3")},
			func(g *Guest) { g.Disks = []Disk{{"/d/1", false}, {"/d/2", true}, {"/d/3", false}} }},
		{"empty assignment resets the list",
			[]string{withGuest("KernelArguments=a b", "KernelArguments=", "KernelArguments=c")},
			func(g *Guest) { g.KernelArguments = []string{"c"} }},
		{"empty assignment at the end leaves an empty list",
			[]string{withGuest("KernelArguments=a b", "KernelArguments=")},
			func(*Guest) {}},
		{"empty assignment in a drop-in resets the main file's list",
			[]string{withGuest("Disk=/d/1 /d/2"), lines("[Guest]", "Disk=", "Disk=/d/3")},
			func(g *Guest) { g.Disks = []Disk{{"/d/3", false}} }},
		{"reset in a drop-in does not drop what a later drop-in adds",
			[]string{withGuest("Disk=/d/1"), lines("[Guest]", "Disk="), lines("[Guest]", "Disk=/d/4")},
			func(g *Guest) { g.Disks = []Disk{{"/d/4", false}} }},
		{"reset of a list in the main file before a drop-in adds to it",
			[]string{withGuest("[Network]", "Bridge=br0", "Address=10.1.1.10", "Address="), lines("[Network]", "Address=10.1.1.11")},
			func(g *Guest) { g.Network = defaultNetwork("dns", "br0", "10.1.1.11/32") }},
		{"Install list reset",
			[]string{withGuest("[Install]", "WantedBy=a.target"), lines("[Install]", "WantedBy=", "WantedBy=b.target")},
			func(g *Guest) { g.WantedBy = []string{"b.target"} }},
		{"Firewall list reset",
			[]string{withGuest("[Network]", "Bridge=br0", "Address=10.1.1.10", "[Firewall]", "AcceptIn=tcp/22", "HostAccess=tcp/22"),
				lines("[Firewall]", "AcceptIn=", "AcceptIn=tcp/80")},
			func(g *Guest) {
				g.Network = defaultNetwork("dns", "br0", "10.1.1.10/32")
				g.Firewall = &Firewall{
					AcceptIn:   []Rule{{Proto: TCP, FromPort: 80, ToPort: 80}},
					HostAccess: []Rule{{Proto: TCP, FromPort: 22, ToPort: 22}},
					Log:        true,
				}
			}},
		{"single key: last wins in a file",
			[]string{withGuest("Memory=1G", "Memory=2G")},
			func(g *Guest) { g.Memory = 2 << 30 }},
		{"single key: drop-ins override in order",
			[]string{withGuest("Memory=1G"), lines("[Guest]", "Memory=2G"), lines("[Guest]", "Memory=3G")},
			func(g *Guest) { g.Memory = 3 << 30 }},
		{"single key: an invalid value overridden later is fine",
			[]string{withGuest("Memory=lots"), lines("[Guest]", "Memory=1G")},
			func(g *Guest) { g.Memory = 1 << 30 }},
		{"single key: empty assignment restores the default",
			[]string{withGuest("Memory=1G", "User=dns", "Cow=no"), lines("[Guest]", "Memory=", "User=", "Cow=")},
			func(*Guest) {}},
		{"single key: empty assignment then a new value",
			[]string{withGuest("Memory=1G"), lines("[Guest]", "Memory="), lines("[Guest]", "Memory=512M")},
			func(g *Guest) { g.Memory = 512 << 20 }},
		{"section only in a drop-in",
			[]string{withGuest(), lines("[Network]", "Bridge=br0", "Address=10.1.1.10")},
			func(g *Guest) { g.Network = defaultNetwork("dns", "br0", "10.1.1.10/32") }},
		{"pass-through settings keep their order over files",
			[]string{withGuest("[Service]", "Restart=always"), lines("[Service]", "Restart=", "Restart=no")},
			func(g *Guest) {
				g.Service = []Setting{{Key: "Restart", Value: "always"}, {Key: "Restart"}, {Key: "Restart", Value: "no"}}
			}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			var args, dropIns []string
			for i, f := range tc.files {
				path := "dns.conf"
				if i > 0 {
					path = fmt.Sprintf("dns.conf.d/%02d.conf", i)
					dropIns = append(dropIns, path)
				}
				args = append(args, path, f)
			}
			got, err := parseFiles("dns", args...)
			if err != nil {
				t.Fatalf("Parse failed: %v", err)
			}
			want := defaultGuest("dns")
			tc.want(want)
			if diff := cmp.Diff(want, got, guestOpts); diff != "" {
				t.Errorf("Parse mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(dropIns, got.DropIns); diff != "" {
				t.Errorf("DropIns (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseDropInErrorsNameTheDropIn(t *testing.T) {
	_, err := parseFiles("dns",
		"/etc/uml/dns.conf", withGuest(),
		"/etc/uml/dns.conf.d/10-mem.conf", lines("Memory=1G", "[Guest]", "Memroy=2G"))
	want := "/etc/uml/dns.conf.d/10-mem.conf:1: Memory= comes before any section; put it under a [Section] header\n" +
		"/etc/uml/dns.conf.d/10-mem.conf:3: Memroy= is not a key of [Guest]; did you mean Memory=?"
	checkError(t, want, err)
}

func TestParseName(t *testing.T) {
	for _, name := range []string{"", "DNS", "-dns", "_dns", "dns.web", "dns web", strings.Repeat("a", 33)} {
		_, err := parse(name, withGuest())
		want := fmt.Sprintf("%q is not a guest name; a guest's name is 1 to 32 lower-case letters, digits, dashes and underscores, starting with a letter or digit", name)
		if diff := cmp.Diff(want, errText(err)); diff != "" {
			t.Errorf("Parse(%q) error (-want +got):\n%s", name, diff)
		}
	}
	for _, name := range []string{"a", "0", "dns-1", "web_2", strings.Repeat("a", 32)} {
		if !ValidName(name) {
			t.Errorf("ValidName(%q) = false, want true", name)
		}
	}
}

func TestFormat(t *testing.T) {
	g := mustParse(t, "dns", lines(
		"[Guest]", "RootImage=/srv/dns.img", "Cow=no", "Disk=/srv/data.img /srv/ro.img:ro", "Memory=1536M",
		"User=dns", "Group=uml", "Chroot=no", "KernelArguments=init=/bin/sh quiet", "Ready=console:login: $",
		"ReadyTimeout=2min", "StopTimeout=infinity",
		"[Network]", "Bridge=br0", "MAC=52:54:00:12:34:56", "Address=10.1.1.10/24 2001:db8::10",
		"[Firewall]", "AcceptIn=udp/53 tcp/53", "ConnectOut=udp/53@!10.1.1.0/24", "HostAccess=icmp", "Log=no",
		"[Unit]", "After=network-online.target",
		"[Service]", "Restart=on-failure",
		"[Install]", "WantedBy=multi-user.target", "RequiredBy=uml.target"))
	want := lines(
		"[Guest]",
		"Description=User-Mode Linux guest dns",
		"RootImage=/srv/dns.img",
		"Cow=no",
		"Disk=/srv/data.img",
		"Disk=/srv/ro.img:ro",
		"Memory=1536M",
		"User=dns",
		"Group=uml",
		"Chroot=no",
		"KernelArguments=init=/bin/sh",
		"KernelArguments=quiet",
		"Ready=console:login: $",
		"ReadyTimeout=2min",
		"StopTimeout=infinity",
		"",
		"[Network]",
		"Bridge=br0",
		"Tap=uml-dns",
		"MAC=52:54:00:12:34:56",
		"Address=10.1.1.10/24",
		"Address=2001:db8::10/128",
		"AntiSpoofing=yes",
		"",
		"[Firewall]",
		"AcceptIn=udp/53",
		"AcceptIn=tcp/53",
		"ConnectOut=udp/53@!10.1.1.0/24",
		"HostAccess=icmp",
		"Log=no",
		"",
		"[Unit]",
		"After=network-online.target",
		"",
		"[Service]",
		"Restart=on-failure",
		"",
		"[Install]",
		"WantedBy=multi-user.target",
		"RequiredBy=uml.target",
	)
	if diff := cmp.Diff(want, string(Format(g))); diff != "" {
		t.Errorf("Format (-want +got):\n%s", diff)
	}
	checkFormatRoundTrip(t, g)

	// Defaults are written out; the default kernel and user are not, so
	// that they stay the defaults.
	g = mustParse(t, "dns", withGuest())
	want = lines(
		"[Guest]",
		"Description=User-Mode Linux guest dns",
		"RootImage=/srv/uml/root.img",
		"Cow=/var/lib/uml/dns/root.cow",
		"Memory=128M",
		"Chroot=yes",
		"Ready=kernel",
		"ReadyTimeout=1min 30s",
		"StopTimeout=30s",
	)
	if diff := cmp.Diff(want, string(Format(g))); diff != "" {
		t.Errorf("Format (-want +got):\n%s", diff)
	}
	checkFormatRoundTrip(t, g)
}

// checkFormatRoundTrip checks that Format(g) parses back to g and that
// Format is a fixed point. The fuzz test relies on it too.
func checkFormatRoundTrip(t *testing.T, g *Guest) {
	t.Helper()
	text := Format(g)
	again, err := Parse(g.Name, Source{Path: "formatted.conf", Data: text})
	if err != nil {
		t.Fatalf("Format output does not parse: %v\n%s", err, text)
	}
	if diff := cmp.Diff(g, again, guestOpts); diff != "" {
		t.Fatalf("Format output parses to another guest (-before +after):\n%s\n%s", diff, text)
	}
	if diff := cmp.Diff(string(text), string(Format(again))); diff != "" {
		t.Fatalf("Format is not a fixed point (-first +second):\n%s", diff)
	}
}

// checkGuestMAC checks what a derived MAC must be.
func checkGuestMAC(t *testing.T, m []byte) {
	t.Helper()
	if len(m) != 6 {
		t.Fatalf("MAC %x has %d bytes, want 6", m, len(m))
	}
	if m[0]&0x02 == 0 {
		t.Errorf("MAC %x is not locally administered", m)
	}
	if m[0]&0x01 != 0 {
		t.Errorf("MAC %x is multicast", m)
	}
}

// TestParseDNSExample parses the DNS bastion of uml.conf(5).
func TestParseDNSExample(t *testing.T) {
	got := mustParse(t, "dns", readDNSExample(t))
	want := defaultGuest("dns")
	want.RootImage = "/var/lib/uml/images/debian-bind.img"
	want.Memory = 256 << 20
	want.WantedBy = []string{"multi-user.target"}
	want.Network = defaultNetwork("dns", "br0", "10.1.1.10/32")
	notLAN := &Peer{Not: true, Prefix: prefix("10.1.1.0/24")}
	want.Firewall = &Firewall{
		AcceptIn: []Rule{{Proto: UDP, FromPort: 53, ToPort: 53}, {Proto: TCP, FromPort: 53, ToPort: 53}},
		ConnectOut: []Rule{
			{Proto: UDP, FromPort: 53, ToPort: 53, Peer: notLAN},
			{Proto: TCP, FromPort: 53, ToPort: 53, Peer: notLAN},
			{Proto: UDP, FromPort: 514, ToPort: 514, Peer: &Peer{Host: "logserver"}},
		},
		HostAccess: []Rule{{Proto: TCP, FromPort: 22, ToPort: 22}},
		Log:        true,
	}
	if diff := cmp.Diff(want, got, guestOpts); diff != "" {
		t.Errorf("Parse mismatch (-want +got):\n%s", diff)
	}
	checkFormatRoundTrip(t, got)
}

// TestParseErrorLimit: a file that is not a configuration at all gets a
// bounded report.
func TestParseErrorLimit(t *testing.T) {
	_, err := parse("dns", withGuest(strings.Repeat("nonsense\n", 30)))
	errs, ok := err.(Errors)
	if !ok {
		t.Fatalf("Parse error is %T, want Errors", err)
	}
	if len(errs) != maxErrors+1 {
		t.Fatalf("got %d errors, want %d and a summary:\n%v", len(errs), maxErrors, err)
	}
	if got, want := errs[maxErrors].Error(), "dns.conf:23: and 10 more errors; fix the ones above first"; got != want {
		t.Errorf("last error = %q, want %q", got, want)
	}
}
