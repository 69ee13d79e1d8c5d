package config

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Each parser returns an error whose text completes the sentence
// "KEY=VALUE: …" and says what would be accepted.

// ParseBool accepts what systemd accepts.
func ParseBool(s string) (bool, error) {
	switch strings.ToLower(s) {
	case "1", "yes", "y", "true", "t", "on":
		return true, nil
	case "0", "no", "n", "false", "f", "off":
		return false, nil
	}
	return false, errors.New("is not a boolean; use yes or no")
}

// ParseSize parses a byte count with an optional K, M or G suffix (powers of 1024).
func ParseSize(s string) (uint64, error) {
	num, mult := s, uint64(1)
	if n := len(s); n > 0 {
		switch s[n-1] {
		case 'K', 'k':
			num, mult = s[:n-1], 1<<10
		case 'M', 'm':
			num, mult = s[:n-1], 1<<20
		case 'G', 'g':
			num, mult = s[:n-1], 1<<30
		}
	}
	v, err := strconv.ParseUint(num, 10, 64)
	if err != nil || num == "" || num[0] == '+' {
		return 0, errors.New("is not a size; write a whole number with K, M or G, such as 256M")
	}
	if v > math.MaxUint64/mult {
		return 0, errors.New("is too large")
	}
	return v * mult, nil
}

// FormatSize writes a size with the largest suffix that keeps it exact.
func FormatSize(v uint64) string {
	for _, u := range []struct {
		suffix string
		mult   uint64
	}{{"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}} {
		if v != 0 && v%u.mult == 0 {
			return strconv.FormatUint(v/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatUint(v, 10)
}

// timeUnits are systemd's time span units (systemd.time(7)).
var timeUnits = []struct {
	names []string
	d     time.Duration
}{
	{[]string{"nsec", "ns"}, time.Nanosecond},
	{[]string{"usec", "us", "µs", "μs"}, time.Microsecond},
	{[]string{"msec", "ms"}, time.Millisecond},
	{[]string{"seconds", "second", "sec", "s", ""}, time.Second},
	{[]string{"minutes", "minute", "min", "m"}, time.Minute},
	{[]string{"hours", "hour", "hr", "h"}, time.Hour},
	{[]string{"days", "day", "d"}, 24 * time.Hour},
	{[]string{"weeks", "week", "w"}, 7 * 24 * time.Hour},
	{[]string{"months", "month", "M"}, 2629800 * time.Second},
	{[]string{"years", "year", "y"}, 31557600 * time.Second},
}

var errTimespan = errors.New(`is not a time span; write it as systemd does, such as 90s, 2min or "1h 30s", or infinity`)

// ParseTimespan parses a systemd time span; a number without unit is seconds.
func ParseTimespan(s string) (Timespan, error) {
	if s == "infinity" {
		return Timespan{Infinite: true}, nil
	}
	var total time.Duration
	rest := strings.TrimSpace(s)
	if rest == "" {
		return Timespan{}, errTimespan
	}
	for rest != "" {
		i := 0
		for i < len(rest) && (rest[i] >= '0' && rest[i] <= '9' || rest[i] == '.') {
			i++
		}
		num := rest[:i]
		rest = strings.TrimLeft(rest[i:], " \t")
		j := 0
		for j < len(rest) && !(rest[j] >= '0' && rest[j] <= '9') && rest[j] != ' ' && rest[j] != '\t' {
			j++
		}
		unit := rest[:j]
		rest = strings.TrimLeft(rest[j:], " \t")
		whole, frac, _ := strings.Cut(num, ".")
		n, err := strconv.ParseUint(whole, 10, 63)
		if err != nil || strings.Contains(frac, ".") || frac != "" && strings.Trim(frac, "0123456789") != "" {
			return Timespan{}, errTimespan
		}
		d, ok := unitDuration(unit)
		if !ok {
			return Timespan{}, errTimespan
		}
		// Whole units exactly; leave room for a fraction of one unit.
		room := time.Duration(0)
		if frac != "" {
			room = d
		}
		if n > uint64(math.MaxInt64/d) || total > math.MaxInt64-time.Duration(n)*d-room {
			return Timespan{}, errors.New("is too long; use infinity for no limit")
		}
		total += time.Duration(n) * d
		if frac != "" {
			f, _ := strconv.ParseFloat("0."+frac, 64)
			total += time.Duration(f * float64(d))
		}
	}
	return Timespan{D: total}, nil
}

func unitDuration(name string) (time.Duration, bool) {
	for _, u := range timeUnits {
		if slices.Contains(u.names, name) {
			return u.d, true
		}
	}
	return 0, false
}

// FormatTimespan writes a time span the way systemd does ("1min 30s").
func FormatTimespan(t Timespan) string {
	if t.Infinite {
		return "infinity"
	}
	d := t.D
	if d == 0 {
		return "0"
	}
	var parts []string
	for _, u := range []struct {
		name string
		d    time.Duration
	}{{"d", 24 * time.Hour}, {"h", time.Hour}, {"min", time.Minute}, {"s", time.Second}, {"ms", time.Millisecond}, {"us", time.Microsecond}, {"ns", time.Nanosecond}} {
		if n := d / u.d; n > 0 {
			parts = append(parts, strconv.FormatInt(int64(n), 10)+u.name)
			d -= n * u.d
		}
	}
	return strings.Join(parts, " ")
}

// ParsePath accepts an absolute path and returns it cleaned. Paths end up
// in unit files, where white space separates words and quotes and
// backslashes are interpreted: those are refused. A path for UML's ubd
// option (onCmdline) may not contain a comma, its separator, nor anything
// outside ASCII: the kernel splits its command line at byte 0xA0 too.
func ParsePath(s string, onCmdline bool) (string, error) {
	if !strings.HasPrefix(s, "/") {
		return "", errors.New("is not an absolute path; start it with /")
	}
	if strings.ContainsAny(s, " \t") {
		return "", errors.New("contains white space, which the kernel command line cannot carry; rename the file or use a symbolic link")
	}
	if strings.ContainsAny(s, "\"'\\") {
		return "", errors.New("contains a quote or a backslash, which systemd would interpret; rename the file or use a symbolic link")
	}
	if onCmdline && strings.Contains(s, ",") {
		return "", errors.New("contains a comma, which UML's ubd option uses as a separator; rename the file or use a symbolic link")
	}
	if onCmdline && !isASCII(s) {
		return "", errors.New("contains characters outside ASCII, which the kernel command line may split; rename the file or use a symbolic link")
	}
	return filepath.Clean(s), nil
}

// ParseInterfaceName checks a Linux network interface name.
func ParseInterfaceName(s string) (string, error) {
	if s == "" || s == "." || s == ".." {
		return "", errors.New("is not an interface name")
	}
	if len(s) > MaxTapName {
		return "", fmt.Errorf("is longer than the %d bytes Linux allows for an interface name", MaxTapName)
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return "", errors.New("is not an interface name; use letters, digits, dashes, underscores and dots")
		}
	}
	return s, nil
}

// ParseMAC accepts a unicast Ethernet address written xx:xx:xx:xx:xx:xx.
func ParseMAC(s string) (net.HardwareAddr, error) {
	m, err := net.ParseMAC(s)
	if err != nil || len(m) != 6 || len(s) != 17 {
		return nil, errors.New("is not a MAC address; write it as xx:xx:xx:xx:xx:xx")
	}
	if m[0]&1 != 0 {
		return nil, errors.New("is a multicast address; a guest needs a unicast one (the lowest bit of the first byte clear)")
	}
	if string(m) == "\x00\x00\x00\x00\x00\x00" {
		return nil, errors.New("is the all-zero address; choose another or leave MAC= out to derive one")
	}
	return m, nil
}

// DefaultMAC derives a stable, locally administered, unicast MAC address
// from a guest's name.
func DefaultMAC(name string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("umlsd guest " + name))
	m := net.HardwareAddr(sum[:6])
	m[0] = m[0]&^0x01 | 0x02
	return m
}

// ParseAddress accepts an IPv4 or IPv6 address, optionally with a prefix length.
func ParseAddress(s string) (netip.Prefix, error) {
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return p, errors.New("is not an address with prefix length; write it as 10.1.1.10/24 or 2001:db8::10/64")
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return p, errors.New("is not an IPv4 or IPv6 address")
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	a := p.Addr()
	switch {
	case a.Is4In6():
		return p, errors.New("is an IPv4-mapped IPv6 address; write the IPv4 address")
	case a.IsUnspecified(), a.IsLoopback(), a.IsMulticast():
		return p, errors.New("is not an address a guest can own (unspecified, loopback or multicast)")
	}
	return p, nil
}

// ParseRule parses a firewall rule PROTO/PORT[@PEER]. withPeer is false for
// HostAccess=, whose peer is always the host.
func ParseRule(s string, withPeer bool) (Rule, error) {
	var r Rule
	spec, peer, hasPeer := strings.Cut(s, "@")
	if hasPeer && !withPeer {
		return r, errors.New("names a peer, but HostAccess= rules always mean the host itself; remove @" + peer)
	}
	protoName, port, hasPort := strings.Cut(spec, "/")
	r.Proto = Proto(protoName)
	switch r.Proto {
	case TCP, UDP:
		if !hasPort {
			return r, fmt.Errorf("has no port; write %s/PORT or %s/FROM-TO", protoName, protoName)
		}
		from, to, isRange := strings.Cut(port, "-")
		var err error
		if r.FromPort, err = parsePort(from); err != nil {
			return r, err
		}
		r.ToPort = r.FromPort
		if isRange {
			if r.ToPort, err = parsePort(to); err != nil {
				return r, err
			}
			if r.ToPort < r.FromPort {
				return r, fmt.Errorf("has the port range %s backwards; write %s-%s", port, to, from)
			}
		}
	case ICMP:
		if hasPort {
			if !validICMPType(port) {
				return r, fmt.Errorf("has the unknown icmp type %q; use a number or one of %s", port, strings.Join(icmpTypes, ", "))
			}
			r.ICMPType = port
		}
	default:
		return r, errors.New("is not a rule; write PROTO/PORT[@PEER] with PROTO tcp, udp or icmp, such as tcp/22@10.0.0.0/8")
	}
	if hasPeer {
		p, err := ParsePeer(peer)
		if err != nil {
			return r, err
		}
		r.Peer = &p
	}
	return r, nil
}

func parsePort(s string) (uint16, error) {
	v, err := strconv.ParseUint(s, 10, 16)
	if err != nil || v == 0 || s[0] == '+' {
		return 0, fmt.Errorf("has the port %q; a port is a number from 1 to 65535", s)
	}
	return uint16(v), nil
}

// icmpTypes are the icmp type names accepted in rules; netprep maps them to
// iptables and ip6tables names.
var icmpTypes = []string{
	"echo-request", "echo-reply", "destination-unreachable", "time-exceeded",
	"parameter-problem", "packet-too-big", "redirect", "router-advertisement",
	"router-solicitation",
}

func validICMPType(s string) bool {
	if slices.Contains(icmpTypes, s) {
		return true
	}
	v, err := strconv.ParseUint(s, 10, 8)
	return err == nil && strconv.FormatUint(v, 10) == s
}

// ParsePeer parses an address, a CIDR or a host name, optionally after "!".
func ParsePeer(s string) (Peer, error) {
	var p Peer
	if rest, ok := strings.CutPrefix(s, "!"); ok {
		p.Not, s = true, rest
	}
	if s == "" {
		return p, errors.New("has an empty peer after @; write an address, a CIDR or a host name")
	}
	if strings.Contains(s, "/") {
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			return p, fmt.Errorf("has the peer %q, which is not a CIDR such as 10.1.1.0/24", s)
		}
		if pfx != pfx.Masked() {
			return p, fmt.Errorf("has the peer %s with host bits set; did you mean %s?", s, pfx.Masked())
		}
		if pfx.Addr().Is4In6() {
			return p, fmt.Errorf("has the peer %s, an IPv4-mapped IPv6 range; write it as an IPv4 CIDR", s)
		}
		p.Prefix = pfx
		return p, nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return p, fmt.Errorf("has the peer %q with a zone, which a firewall rule cannot use", s)
		}
		if a.Is4In6() {
			return p, fmt.Errorf("has the peer %s, an IPv4-mapped IPv6 address; write the IPv4 address %s", s, a.Unmap())
		}
		p.Prefix = netip.PrefixFrom(a, a.BitLen())
		return p, nil
	}
	if !validHostName(s) {
		return p, fmt.Errorf("has the peer %q, which is neither an address, a CIDR nor a host name", s)
	}
	p.Host = s
	return p, nil
}

func validHostName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	// A name whose last label is all digits (10.1.1) is a mistyped
	// address, which a resolver would read in surprising ways.
	if last := s[strings.LastIndexByte(s, '.')+1:]; strings.Trim(last, "0123456789") == "" {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range []byte(label) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// parseAccount accepts a user or group name, or a numeric id; root (0) is
// refused because the kernel must never run with root's rights.
func parseAccount(s, what string) (string, error) {
	if s == "root" || s == "0" {
		return "", fmt.Errorf("is root; the guest kernel must run as an unprivileged %s", what)
	}
	if v, err := strconv.ParseUint(s, 10, 32); err == nil {
		if v == math.MaxUint32 || s[0] == '0' {
			return "", fmt.Errorf("is not a valid %s id", what)
		}
		return s, nil
	}
	if !validAccountName(s) {
		return "", fmt.Errorf("is not a %s name; use lower-case letters, digits, dashes and underscores, at most %d of them", what, maxUserName)
	}
	return s, nil
}

func validAccountName(s string) bool {
	if s == "" || len(s) > maxUserName || !(s[0] >= 'a' && s[0] <= 'z' || s[0] == '_') {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// unitTypes are the suffixes a unit named in [Install] may have.
var unitTypes = []string{".target", ".service", ".socket", ".mount", ".automount", ".path", ".timer", ".slice", ".scope", ".device", ".swap"}

// parseUnitName accepts a unit name that can be linked into (no template).
func parseUnitName(s string) (string, error) {
	bad := errors.New("is not a unit name such as multi-user.target")
	if len(s) > 255 {
		return "", bad
	}
	suffix := ""
	for _, t := range unitTypes {
		if strings.HasSuffix(s, t) && len(s) > len(t) {
			suffix = t
		}
	}
	if suffix == "" {
		return "", bad
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(":-_.\\@", c) >= 0) {
			return "", bad
		}
	}
	if strings.HasSuffix(s, "@"+suffix) {
		return "", errors.New("is a template; name an instance such as foo@bar" + suffix)
	}
	return s, nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// Kernel parameters the supervisor sets itself: these exact keys, and the
// device options ubd, eth, vec, con and ssl with or without a device number
// (ubd0=, ubd1r=, con=, con0=, …).
var (
	managedKernelParams  = []string{"mem", "umid", "uml_dir", "mconsole", "hostfs", "root"}
	managedKernelDevices = []string{"ubd", "eth", "vec", "con", "ssl"}
)

// managedKernelArg reports whether a kernel command-line word would override
// what the supervisor manages.
func managedKernelArg(word string) bool {
	key, _, _ := strings.Cut(word, "=")
	if slices.Contains(managedKernelParams, key) {
		return true
	}
	for _, d := range managedKernelDevices {
		// UML's ubd option also takes a device letter (ubda= is ubd0=),
		// and the kernel hands it every word that starts with ubd.
		if rest, ok := strings.CutPrefix(key, d); ok && (rest == "" || rest[0] >= '0' && rest[0] <= '9' || d == "ubd") {
			return true
		}
	}
	return false
}
