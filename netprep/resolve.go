package netprep

import (
	"context"
	"fmt"
	"net/netip"

	"umlsd/config"
)

// Lookup resolves a host name, as net.Resolver.LookupNetIP(ctx, "ip", host)
// does; tests pass their own.
type Lookup func(ctx context.Context, host string) ([]netip.Addr, error)

// Resolve looks up the host names g's firewall rules name, once each. A
// name that does not resolve is an error: a rule must not silently allow
// nothing, or worse, everything ("!name").
func Resolve(ctx context.Context, g *config.Guest, lookup Lookup) (Addrs, error) {
	addrs := Addrs{}
	if g.Firewall == nil {
		return addrs, nil
	}
	for _, rules := range [][]config.Rule{g.Firewall.AcceptIn, g.Firewall.ConnectOut, g.Firewall.HostAccess} {
		for _, r := range rules {
			if r.Peer == nil || r.Peer.Host == "" {
				continue
			}
			if _, done := addrs[r.Peer.Host]; done {
				continue
			}
			as, err := lookup(ctx, r.Peer.Host)
			if err == nil && len(as) == 0 {
				err = fmt.Errorf("no addresses")
			}
			if err != nil {
				return nil, fmt.Errorf("%s: the rule %s names the host %s, which does not resolve (%v); fix the name or the host's resolver (/etc/hosts), or write an address", g.Path, r, r.Peer.Host, err)
			}
			addrs[r.Peer.Host] = as
		}
	}
	return addrs, nil
}
