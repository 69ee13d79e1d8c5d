package config

import (
	"fmt"
	"strings"
	"testing"
)

// dnsGuest is testdata/dns.conf with the address of guest n of many.
func dnsGuest(b *testing.B, n int) Source {
	b.Helper()
	conf := strings.Replace(readDNSExample(b), "Address=10.1.1.10", fmt.Sprintf("Address=10.%d.%d.%d", 1+n/65536, n/256%256, n%256), 1)
	return Source{Path: fmt.Sprintf("/etc/uml/g%05d.conf", n), Data: []byte(conf)}
}

func BenchmarkParse(b *testing.B) {
	src := dnsGuest(b, 1)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse("dns", src); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkConflicts checks 1000 guests that share a bridge and a backing
// image, as a host full of DNS guests does: linear, not quadratic.
func BenchmarkConflicts(b *testing.B) {
	guests := make([]*Guest, 1000)
	for i := range guests {
		g, err := Parse(fmt.Sprintf("g%05d", i), dnsGuest(b, i))
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
