package netprep

import (
	"fmt"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// BenchmarkNetworkPrep times one guest's network prep (firewall, then tap)
// and teardown with the real tools in a throwaway network namespace, with
// 0 to 50 other guests' firewalls and taps already in place: the cost per
// guest should not grow with their number. Run as root (make bench).
func BenchmarkNetworkPrep(b *testing.B) {
	for _, others := range []int{0, 10, 25, 50} {
		b.Run(fmt.Sprintf("running=%d", others), func(b *testing.B) {
			inNewNetns(b)
			if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}); err != nil {
				b.Fatal(err)
			}
			fw := NewFirewall()
			guest := func(i int) (string, RuleSet) {
				name := fmt.Sprintf("g%d", i)
				g := parse(b, name, guestHead+fmt.Sprintf("[Network]\nBridge=br0\nAddress=10.1.%d.%d/16 fd00:1::%d/64\n[Firewall]\nAcceptIn=udp/53 tcp/53\nConnectOut=udp/53@!10.1.0.0/16 tcp/53@!10.1.0.0/16 udp/514@10.2.2.3\nHostAccess=tcp/22\n", i/200, i%200+1, i+1))
				rs, err := Rules(g, nil)
				if err != nil {
					b.Fatal(err)
				}
				return name, rs
			}
			for i := range others {
				name, rs := guest(i + 1)
				if err := fw.Apply(b.Context(), name, rs); err != nil {
					b.Fatal(err)
				}
				tap, err := OpenTap("uml-"+name, "br0")
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { tap.File.Close() })
			}
			name, rs := guest(0)
			var prep, tapGone, teardown time.Duration
			for b.Loop() {
				start := time.Now()
				if err := fw.Apply(b.Context(), name, rs); err != nil {
					b.Fatal(err)
				}
				tap, err := OpenTap("uml-"+name, "br0")
				if err != nil {
					b.Fatal(err)
				}
				// The kernel's exit closes the tap; the supervisor then
				// finds it gone and removes the firewall.
				closing := time.Now()
				tap.File.Close()
				closed := time.Now()
				if err := DeleteTap(tap.Name, tap.Index); err != nil {
					b.Fatal(err)
				}
				if err := fw.Teardown(b.Context(), name); err != nil {
					b.Fatal(err)
				}
				prep += closing.Sub(start)
				tapGone += closed.Sub(closing)
				teardown += time.Since(closed)
			}
			for _, m := range []struct {
				d    time.Duration
				unit string
			}{{prep, "prep-ms/op"}, {tapGone, "tap-close-ms/op"}, {teardown, "teardown-ms/op"}} {
				b.ReportMetric(float64(m.d.Microseconds())/1000/float64(b.N), m.unit)
			}
		})
	}
}
