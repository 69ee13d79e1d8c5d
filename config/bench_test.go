package config

import (
	"fmt"
	"testing"
)

// dnsGuest is the DNS bastion of uml.conf(5), as name N of many.
func dnsGuest(n int) []byte {
	return fmt.Appendf(nil, `[Guest]
RootImage=/var/lib/uml/images/debian-bind.img
Memory=256M

[Network]
Bridge=br0
Address=10.%d.%d.%d

[Firewall]
AcceptIn=udp/53 tcp/53
ConnectOut=udp/53@!10.1.1.0/24 tcp/53@!10.1.1.0/24
ConnectOut=udp/514@logserver
HostAccess=tcp/22

[Install]
WantedBy=multi-user.target
`, 1+n/65536, n/256%256, n%256)
}

func BenchmarkParse(b *testing.B) {
	data := dnsGuest(1)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse("dns", Source{Path: "/etc/uml/dns.conf", Data: data}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkConflicts checks 1000 guests that share a bridge and a backing
// image, as a host full of DNS guests does: linear, not quadratic.
func BenchmarkConflicts(b *testing.B) {
	guests := make([]*Guest, 1000)
	for i := range guests {
		g, err := Parse(fmt.Sprintf("g%04d", i), Source{Path: fmt.Sprintf("/etc/uml/g%04d.conf", i), Data: dnsGuest(i)})
		if err != nil {
			b.Fatal(err)
		}
		guests[i] = g
	}
	b.ReportAllocs()
	for b.Loop() {
		for _, errs := range findConflicts(guests) {
			if len(errs) > 0 {
				b.Fatal(errs)
			}
		}
	}
}
