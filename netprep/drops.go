package netprep

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"

	"github.com/coreos/go-iptables/iptables"
)

// Drops counts what a guest's firewall has dropped since it was installed.
type Drops struct {
	// Spoofed is what came from an address, MAC or ARP sender the guest
	// does not own, or with an ethertype it may not send.
	Spoofed uint64
	// Policy is what its [Firewall] policy does not allow.
	Policy uint64
}

// Drops reads guest name's drop counters: its DROP rules' packet counts.
// A chain the guest does not have counts nothing.
func (fw *Firewall) Drops(ctx context.Context, name string) (Drops, error) {
	var d Drops
	base := Base(name)
	for _, p := range []iptables.Protocol{iptables.ProtocolIPv4, iptables.ProtocolIPv6} {
		ipt, err := iptables.New(iptables.IPFamily(p), iptables.Timeout(5))
		if err != nil {
			return d, fmt.Errorf("finding iptables: %w", err)
		}
		chains := map[string][]string{}
		for _, table := range []string{"raw", "mangle"} {
			if chains[table], err = ipt.ListChains(table); err != nil {
				return d, fmt.Errorf("listing the chains of table %s: %w", table, err)
			}
		}
		for _, c := range []struct {
			table, suffix string
			n             *uint64
		}{
			{"raw", spoofSuffix, &d.Spoofed},
			{"raw", ndSuffix, &d.Spoofed},
			{"mangle", outSuffix, &d.Policy},
			{"mangle", inSuffix, &d.Policy},
			{"mangle", hostSuffix, &d.Policy},
		} {
			if err := ctx.Err(); err != nil {
				return d, err
			}
			if !slices.Contains(chains[c.table], base+c.suffix) {
				continue
			}
			rows, err := ipt.Stats(c.table, base+c.suffix)
			if err != nil {
				return d, fmt.Errorf("reading the counters of %s: %w", base+c.suffix, err)
			}
			for _, row := range rows { // pkts bytes target …
				if len(row) > 2 && row[2] == "DROP" {
					n, _ := strconv.ParseUint(row[0], 10, 64)
					*c.n += n
				}
			}
		}
	}
	n, err := ebtablesDrops(ctx, base+linkSuffix)
	d.Spoofed += n
	return d, err
}

// ebtablesDrops sums the packet counts of chain's DROP rules; go-iptables
// does not read ebtables.
func ebtablesDrops(ctx context.Context, chain string) (uint64, error) {
	out, err := exec.CommandContext(ctx, "ebtables", "-t", "nat", "-L", chain, "--Lc").CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "incompatible") || strings.Contains(string(out), "doesn't exist") {
			return 0, nil // no such chain
		}
		return 0, fmt.Errorf("reading the counters of %s: ebtables: %w: %s", chain, err, strings.TrimSpace(string(out)))
	}
	var sum uint64
	for _, line := range strings.Split(string(out), "\n") {
		// -p ARP -j DROP , pcnt = 3 -- bcnt = 126
		rule, counts, ok := strings.Cut(line, " , pcnt = ")
		if !ok || !strings.HasSuffix(rule, "-j DROP") {
			continue
		}
		pcnt, _, _ := strings.Cut(counts, " ")
		n, _ := strconv.ParseUint(pcnt, 10, 64)
		sum += n
	}
	return sum, nil
}
