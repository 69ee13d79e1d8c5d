package netprep

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"umlsd/config"
)

// Family is the netfilter family a table belongs to.
type Family string

const (
	IPv4   Family = "ipv4"   // iptables
	IPv6   Family = "ipv6"   // ip6tables
	Bridge Family = "bridge" // ebtables
)

// Rule is one rule as the arguments of its command, one token each.
type Rule []string

// Chain is a chain of the guest's own.
type Chain struct {
	Name  string
	Rules []Rule
}

// Jump is a rule in a built-in chain that sends packets to one of the
// guest's chains; its last two tokens are "-j" and that chain.
type Jump struct {
	From string // the built-in chain
	Rule Rule
}

// Table is what the guest has in one table of one family.
type Table struct {
	Family Family
	Name   string // raw, mangle, filter
	Chains []Chain
	Jumps  []Jump
}

// RuleSet is a guest's whole firewall, in the order it is applied.
type RuleSet []Table

// Chain name suffixes, per table. Teardown knows a guest's chains by these
// alone.
const (
	spoofSuffix  = "-spoof"  // raw: sources the guest does not own
	ndSuffix     = "-nd"     // raw, IPv6: neighbour advertisements for others
	outSuffix    = "-out"    // mangle: what the guest opens (ConnectOut=)
	inSuffix     = "-in"     // mangle: what others open to it (AcceptIn=)
	hostSuffix   = "-host"   // mangle: what the host opens to it (HostAccess=)
	acceptSuffix = "-accept" // filter: what passed, past a FORWARD policy of DROP
	linkSuffix   = "-link"   // ebtables nat: MAC, ARP and ethertypes
)

// chainsOf lists, per family and table, the chains a guest may own.
var chainsOf = []struct {
	family   Family
	table    string
	suffixes []string
}{
	{IPv4, "raw", []string{spoofSuffix}},
	{IPv4, "mangle", []string{outSuffix, inSuffix, hostSuffix}},
	{IPv4, "filter", []string{acceptSuffix}},
	{IPv6, "raw", []string{spoofSuffix, ndSuffix}},
	{IPv6, "mangle", []string{outSuffix, inSuffix, hostSuffix}},
	{IPv6, "filter", []string{acceptSuffix}},
	{Bridge, "nat", []string{linkSuffix}},
}

// maxBase keeps every chain name within iptables' 28 bytes and every log
// prefix ("BASE policy: ") within its 29.
const maxBase = 20

// Base is the prefix of every chain and log line of guest name: uml-NAME,
// or for names too long for that, a shortened name and a hash, with a dot,
// which no guest name contains, so that it cannot be another guest's.
func Base(name string) string {
	if b := "uml-" + name; len(b) <= maxBase {
		return b
	}
	sum := sha256.Sum256([]byte(name))
	return "uml-" + name[:9] + "." + hex.EncodeToString(sum[:3])
}

// Log rate limit: per rule, so one guest cannot use up another's.
var logLimit = Rule{"-m", "limit", "--limit", "10/min", "--limit-burst", "5"}

// Log prefixes name the guest and the reason.
const (
	spoofReason  = "spoof"
	policyReason = "policy"
)

// Addrs are the addresses the host names of a guest's rules resolved to.
type Addrs map[string][]netip.Addr

// Rules is guest g's firewall: anti-spoofing unless AntiSpoofing=no, and
// its [Firewall] policy if it has one. addrs holds the addresses of the
// host names its rules name (see Resolve).
//
// Layout, per IP family:
//   - raw PREROUTING → BASE-spoof, for every packet from the tap: sources
//     the guest does not own are logged and dropped before conntrack sees
//     them, whether they are bridged, routed or addressed to the host;
//   - mangle FORWARD and INPUT → BASE-out (from the tap), mangle FORWARD →
//     BASE-in (bridged to the tap, or routed to the guest's addresses),
//     mangle OUTPUT → BASE-host (the host to the guest's addresses): what
//     the policy allows RETURNs, the rest is logged and dropped. These
//     never ACCEPT, so that the policies of two guests talking to each
//     other both apply whatever the order of their jumps;
//   - filter FORWARD → BASE-accept: what the mangle chains let through is
//     accepted, even where the host's FORWARD policy is DROP.
//
// And in ebtables, nat PREROUTING → BASE-link: frames from the tap with
// another source MAC, ARP with another sender, and any ethertype but IPv4,
// IPv6 and ARP (VLAN tags would hide packets from iptables). nat, because
// its PREROUTING runs before the bridge learns where a MAC is: a forged
// frame dropped later would still draw another host's traffic to the tap.
//
// IPv6 neighbour discovery is fenced like ARP: the guest may advertise
// only its own addresses (BASE-nd) and no routes (router advertisements
// and redirects are dropped).
//
// Replies pass only for connections the guest is a party to, and what
// others open to it only when addressed to it: a frame the bridge floods
// to every port is not the guest's.
func Rules(g *config.Guest, addrs Addrs) (RuleSet, error) {
	n := g.Network
	if n == nil {
		return nil, nil
	}
	b := builder{g: g, n: n, base: Base(g.Name), addrs: addrs}
	var rs RuleSet
	if n.AntiSpoofing {
		rs = append(rs, b.spoof(IPv4), b.spoof(IPv6))
	}
	if g.Firewall != nil {
		for _, f := range []Family{IPv4, IPv6} {
			policy, err := b.policy(f)
			if err != nil {
				return nil, err
			}
			rs = append(rs, policy, b.accept(f))
		}
	}
	if n.AntiSpoofing {
		rs = append(rs, b.link())
	}
	return rs, nil
}

type builder struct {
	g     *config.Guest
	n     *config.Network
	base  string
	addrs Addrs
}

func (b builder) chain(suffix string) string { return b.base + suffix }

// logRule logs what the next rule drops, unless Log=no.
func (b builder) logRule(reason string) []Rule {
	if b.g.Firewall != nil && !b.g.Firewall.Log {
		return nil
	}
	r := append(Rule{}, logLimit...)
	return []Rule{append(r, "-j", "LOG", "--log-prefix", b.base+" "+reason+": ")}
}

// own is the guest's addresses of family f, as single-address prefixes.
func (b builder) own(f Family) []string {
	var out []string
	for _, p := range b.n.Addresses {
		if family(p.Addr()) == f {
			out = append(out, netip.PrefixFrom(p.Addr(), p.Addr().BitLen()).String())
		}
	}
	return out
}

func family(a netip.Addr) Family {
	if a.Is4() || a.Is4In6() {
		return IPv4
	}
	return IPv6
}

// linkLocal is the guest's IPv6 link-local address, as a prefix.
func (b builder) linkLocal() string { return linkLocal(b.n.MAC).String() + "/128" }

// physIn matches what enters from the guest's tap.
func (b builder) physIn() Rule { return Rule{"-m", "physdev", "--physdev-in", b.n.Tap} }

// physOut matches what the bridge forwards to the guest's tap.
func (b builder) physOut() Rule {
	return Rule{"-m", "physdev", "--physdev-out", b.n.Tap, "--physdev-is-bridged"}
}

// routedTo matches what the host routes to the guest's address a through
// the bridge; bridged packets are physOut's, whatever their destination.
func (b builder) routedTo(a string) Rule {
	return Rule{"-d", a, "-o", b.n.Bridge, "-m", "physdev", "!", "--physdev-is-bridged"}
}

func jump(from string, match Rule, to string) Jump {
	return Jump{From: from, Rule: append(append(Rule{}, match...), "-j", to)}
}

func (b builder) spoof(f Family) Table {
	var rules []Rule
	own := b.own(f)
	var chains []Chain
	if f == IPv6 && len(own) > 0 {
		// Neighbour discovery first: it can lie from the guest's own
		// source address.
		nd := b.chain(ndSuffix)
		for _, t := range []string{"134", "137"} { // router advertisement, redirect
			icmp := Rule{"-p", "ipv6-icmp", "-m", "icmp6", "--icmpv6-type", t}
			rules = append(append(rules, b.logged(spoofReason, icmp)...), append(icmp, "-j", "DROP"))
		}
		rules = append(rules, Rule{"-p", "ipv6-icmp", "-m", "icmp6", "--icmpv6-type", "136", "-j", nd})
		var ndRules []Rule
		for _, a := range append(own, b.linkLocal()) {
			ndRules = append(ndRules, Rule{"-m", "u32", "--u32", targetIs(netip.MustParsePrefix(a).Addr()), "-j", "RETURN"})
		}
		ndRules = append(append(ndRules, b.logRule(spoofReason)...), Rule{"-j", "DROP"})
		chains = append(chains, Chain{nd, ndRules})
	}
	for _, a := range own {
		rules = append(rules, Rule{"-s", a, "-j", "RETURN"})
	}
	if f == IPv6 && len(own) > 0 {
		// Neighbour discovery comes from the link-local address the guest's
		// kernel derives from its MAC, and duplicate address detection
		// from no address at all.
		rules = append(rules,
			Rule{"-s", b.linkLocal(), "-j", "RETURN"},
			Rule{"-s", "::/128", "-p", "ipv6-icmp", "-m", "icmp6", "--icmpv6-type", "135", "-j", "RETURN"},
			Rule{"-s", "::/128", "-p", "ipv6-icmp", "-m", "icmp6", "--icmpv6-type", "143", "-j", "RETURN"},
		)
	}
	// A guest without IPv6 addresses still sends router solicitations and
	// multicast reports when its interface comes up: dropped, not logged.
	if f == IPv4 || len(own) > 0 {
		rules = append(rules, b.logRule(spoofReason)...)
	}
	rules = append(rules, Rule{"-j", "DROP"})
	name := b.chain(spoofSuffix)
	return Table{Family: f, Name: "raw",
		Chains: append([]Chain{{name, rules}}, chains...),
		Jumps:  []Jump{jump("PREROUTING", b.physIn(), name)},
	}
}

// targetIs is a u32 match for a neighbour advertisement for a: ICMPv6 right
// after the IPv6 header (no extension headers to hide behind), and a as its
// target address.
func targetIs(a netip.Addr) string {
	b := a.As16()
	words := []string{"4>>8&0xFF=58"}
	for i := 0; i < 16; i += 4 {
		words = append(words, fmt.Sprintf("%d=0x%02x%02x%02x%02x", 48+i, b[i], b[i+1], b[i+2], b[i+3]))
	}
	return strings.Join(words, "&&")
}

// logged is the rule that logs what match drops, unless Log=no.
func (b builder) logged(reason string, match Rule) []Rule {
	var out []Rule
	for _, l := range b.logRule(reason) {
		out = append(out, append(append(Rule{}, match...), l...))
	}
	return out
}

// ndpOut and ndpIn are the ICMPv6 types neighbour discovery needs: router
// solicitation, neighbour solicitation and advertisement, and multicast
// listener reports out; router advertisement and the neighbour messages in.
var (
	ndpOut = []string{"133", "135", "136", "143"}
	ndpIn  = []string{"134", "135", "136"}
)

func (b builder) policy(f Family) (Table, error) {
	fw := b.g.Firewall
	out, in, host := b.chain(outSuffix), b.chain(inSuffix), b.chain(hostSuffix)
	t := Table{Family: f, Name: "mangle"}

	outRules, err := b.allow(f, fw.ConnectOut, "-d", ndpOut, nil, nil)
	if err != nil {
		return t, err
	}
	// What is bridged to the tap need not be for the guest: the bridge
	// floods frames for unknown MACs to every port.
	dst := b.own(f)
	if f == IPv6 {
		dst = append(dst, b.linkLocal())
	}
	inRules, err := b.allow(f, fw.AcceptIn, "-s", ndpIn, dst, nil)
	if err != nil {
		return t, err
	}
	// The supervisor itself (root) connects to the Ready=tcp: port to see
	// whether the guest is ready: root on the host can do anything anyway.
	var probe []Rule
	if r := b.g.Ready; r.Kind == config.ReadyTCP && len(b.n.Addresses) > 0 && family(b.n.Addresses[0].Addr()) == f {
		probe = []Rule{{"-p", "tcp", "-m", "tcp", "--dport", strconv.Itoa(int(r.Port)), "-m", "owner", "--uid-owner", "0", "-m", "conntrack", "--ctstate", "NEW", "-j", "RETURN"}}
	}
	hostRules, err := b.allow(f, fw.HostAccess, "-s", ndpIn, dst, probe)
	if err != nil {
		return t, err
	}
	t.Chains = []Chain{{out, outRules}, {in, inRules}, {host, hostRules}}
	t.Jumps = []Jump{
		jump("FORWARD", b.physIn(), out),
		jump("INPUT", b.physIn(), out),
		jump("FORWARD", b.physOut(), in),
	}
	for _, a := range b.own(f) {
		t.Jumps = append(t.Jumps, jump("FORWARD", b.routedTo(a), in))
	}
	for _, a := range dst {
		t.Jumps = append(t.Jumps, jump("OUTPUT", Rule{"-d", a, "-o", b.n.Bridge}, host))
	}
	return t, nil
}

// allow is a policy chain: replies, neighbour discovery (IPv6 only, and
// only for a guest with IPv6 addresses), extra, the rules (peerFlag says
// whether the peer is the destination or the source; with dst, only to
// those addresses), and a logged drop.
func (b builder) allow(f Family, rules []config.Rule, peerFlag string, ndp []string, dst []string, extra []Rule) ([]Rule, error) {
	var out []Rule
	// Replies, and ICMP errors, of the guest's own connections only: one
	// it opened, or one opened to it. Without addresses to tell them by
	// (AntiSpoofing=no), all.
	est := Rule{"-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED"}
	for _, a := range b.own(f) {
		for _, party := range []string{"--ctorigsrc", "--ctreplsrc"} {
			out = append(out, append(append(Rule{}, est...), party, a, "-j", "RETURN"))
		}
	}
	if len(b.own(f)) == 0 {
		out = append(out, append(est, "-j", "RETURN"))
	}
	if f == IPv6 && len(b.own(IPv6)) > 0 {
		for _, t := range ndp {
			out = append(out, Rule{"-p", "ipv6-icmp", "-m", "icmp6", "--icmpv6-type", t, "-j", "RETURN"})
		}
	}
	out = append(out, extra...)
	for _, r := range rules {
		rs, err := b.rule(f, r, peerFlag)
		if err != nil {
			return nil, err
		}
		if len(dst) == 0 {
			out = append(out, rs...)
			continue
		}
		for _, d := range dst {
			for _, r := range rs {
				out = append(out, append(Rule{"-d", d}, r...))
			}
		}
	}
	out = append(out, b.logRule(policyReason)...)
	return append(out, Rule{"-j", "DROP"}), nil
}

// rule is config rule r in family f: none if it cannot match there, one
// per address of a host name.
func (b builder) rule(f Family, r config.Rule, peerFlag string) ([]Rule, error) {
	proto, ok := protoMatch(f, r)
	if !ok {
		return nil, nil
	}
	// Connections start NEW; ICMP errors and neighbour discovery are
	// never NEW, so icmp rules match the type alone.
	tail := append(proto, "-m", "conntrack", "--ctstate", "NEW", "-j", "RETURN")
	if r.Proto == config.ICMP {
		tail = append(proto, "-j", "RETURN")
	}
	if r.Peer == nil {
		return []Rule{tail}, nil
	}
	peers, err := b.peers(f, r)
	if err != nil {
		return nil, err
	}
	var out []Rule
	for _, p := range peers {
		switch {
		case p == "" && r.Peer.Not: // nothing to except in this family
			out = append(out, tail)
		case p == "":
		case r.Peer.Not:
			out = append(out, append(Rule{"!", peerFlag, p}, tail...))
		default:
			out = append(out, append(Rule{peerFlag, p}, tail...))
		}
	}
	return out, nil
}

// peers are the prefixes rule r's peer stands for in family f; "" when it
// has none there.
func (b builder) peers(f Family, r config.Rule) ([]string, error) {
	p := r.Peer
	if p.Host == "" {
		if family(p.Prefix.Addr()) != f {
			return []string{""}, nil
		}
		return []string{p.Prefix.Masked().String()}, nil
	}
	var out []string
	for _, a := range b.addrs[p.Host] {
		if family(a) == f {
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()).String())
		}
	}
	if len(out) == 0 {
		return []string{""}, nil
	}
	if p.Not && len(out) > 1 {
		return nil, fmt.Errorf("%s: the rule %s excludes %s, which has %d %s addresses (%s); a rule can exclude one address or one CIDR, so write them as separate CIDRs or use a host name with one address",
			b.g.Path, r, p.Host, len(out), f, strings.Join(out, " "))
	}
	return out, nil
}

// icmpv6Only are the rule type names with no IPv4 counterpart.
var icmpv6Only = map[string]bool{"packet-too-big": true}

// protoMatch is the protocol part of r in family f, and false when r
// cannot match in f: numeric icmp types are IPv4's (ICMPv6 numbers them
// differently), and packet-too-big is ICMPv6's.
func protoMatch(f Family, r config.Rule) (Rule, bool) {
	switch r.Proto {
	case config.TCP, config.UDP:
		port := strconv.Itoa(int(r.FromPort))
		if r.ToPort != r.FromPort {
			port += ":" + strconv.Itoa(int(r.ToPort))
		}
		return Rule{"-p", string(r.Proto), "-m", string(r.Proto), "--dport", port}, true
	}
	numeric := r.ICMPType != "" && r.ICMPType[0] >= '0' && r.ICMPType[0] <= '9'
	if f == IPv4 {
		if icmpv6Only[r.ICMPType] {
			return nil, false
		}
		if r.ICMPType == "" {
			return Rule{"-p", "icmp"}, true
		}
		return Rule{"-p", "icmp", "-m", "icmp", "--icmp-type", r.ICMPType}, true
	}
	if numeric {
		return nil, false
	}
	if r.ICMPType == "" {
		return Rule{"-p", "ipv6-icmp"}, true
	}
	return Rule{"-p", "ipv6-icmp", "-m", "icmp6", "--icmpv6-type", r.ICMPType}, true
}

func (b builder) accept(f Family) Table {
	name := b.chain(acceptSuffix)
	t := Table{Family: f, Name: "filter",
		Chains: []Chain{{name, []Rule{{"-j", "ACCEPT"}}}},
		Jumps: []Jump{
			jump("FORWARD", b.physIn(), name),
			jump("FORWARD", b.physOut(), name),
		},
	}
	for _, a := range b.own(f) {
		t.Jumps = append(t.Jumps, jump("FORWARD", b.routedTo(a), name))
	}
	return t
}

func (b builder) link() Table {
	mac := b.n.MAC.String()
	var rules []Rule
	drop := func(match Rule) {
		if l := b.logRule(spoofReason); l != nil {
			// ebtables logs with a watcher; CONTINUE lets the next rule
			// drop what the rate limit kept from the log.
			rules = append(rules, append(append(Rule{}, match...),
				"--limit", "10/min", "--limit-burst", "5",
				"--log-level", "warning", "--log-prefix", b.base+" "+spoofReason+": ", "--log-ip", "--log-arp", "-j", "CONTINUE"))
		}
		rules = append(rules, append(append(Rule{}, match...), "-j", "DROP"))
	}
	drop(Rule{"!", "-s", mac})
	drop(Rule{"-p", "ARP", "--arp-mac-src", "!", mac})
	for _, a := range b.own(IPv4) {
		rules = append(rules, Rule{"-p", "ARP", "--arp-ip-src", strings.TrimSuffix(a, "/32"), "-j", "RETURN"})
	}
	drop(Rule{"-p", "ARP"})
	rules = append(rules, Rule{"-p", "IPv4", "-j", "RETURN"}, Rule{"-p", "IPv6", "-j", "RETURN"})
	drop(nil)
	name := b.chain(linkSuffix)
	return Table{Family: Bridge, Name: "nat",
		Chains: []Chain{{name, rules}},
		Jumps:  []Jump{jump("PREROUTING", Rule{"-i", b.n.Tap}, name)},
	}
}

// linkLocal is the IPv6 link-local address a Linux guest derives from mac
// (EUI-64).
func linkLocal(mac net.HardwareAddr) netip.Addr {
	var a [16]byte
	a[0], a[1] = 0xfe, 0x80
	a[8], a[9], a[10] = mac[0]^0x02, mac[1], mac[2]
	a[11], a[12] = 0xff, 0xfe
	a[13], a[14], a[15] = mac[3], mac[4], mac[5]
	return netip.AddrFrom16(a)
}

// quote is r as a line of iptables-restore input.
func quote(r Rule) string {
	q := make([]string, len(r))
	for i, s := range r {
		q[i] = s
		if strings.ContainsAny(s, " \"\\") || s == "" {
			q[i] = strconv.Quote(s)
		}
	}
	return strings.Join(q, " ")
}
