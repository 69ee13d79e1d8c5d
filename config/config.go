// Package config reads and validates the guest configurations in /etc/uml
// (the format is described in uml.conf(5)) into one typed model with every
// default resolved. The generator, the supervisor and umlctl all use it, so
// that a file means the same thing to each of them.
//
// Errors name the file and line and say what to do; all errors of a file are
// reported, not only the first.
package config

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"time"
)

// Defaults and limits of the format.
const (
	// DefaultKernel is umlsd's own kernel where `make install` puts it
	// with its default PREFIX; the programs are told at link time where
	// it was installed (Loader.Kernel).
	DefaultKernel       = "/usr/local/libexec/umlsd/linux"
	DefaultMemory       = 128 << 20
	MinMemory           = 16 << 20
	DefaultReadyTimeout = 90 * time.Second
	DefaultStopTimeout  = 30 * time.Second
	// StateDir holds each guest's persistent state (the default COW file).
	StateDir = "/var/lib/uml"
	// MaxTapName is the longest interface name Linux accepts (IFNAMSIZ-1).
	MaxTapName = 15
	// maxUserName is the longest user name useradd accepts.
	maxUserName = 32
)

// Guest is one guest's configuration with every default resolved.
type Guest struct {
	// Name is the file name without ".conf"; the unit is uml@Name.service.
	Name string
	// Path is the main file; DropIns are the drop-ins applied after it.
	Path    string
	DropIns []string

	Description string
	Kernel      string
	// KernelIsDefault: Kernel= was not written; Kernel is the default.
	KernelIsDefault bool
	RootImage       string
	// Cow is the copy-on-write file, or "" for Cow=no (RootImage is then
	// written to directly).
	Cow             string
	Disks           []Disk
	Memory          uint64 // bytes
	User            string // a user name or a numeric uid
	UserIsDefault   bool   // User was derived from Name, not written
	Group           string // "" means the user's primary group
	Chroot          bool
	KernelArguments []string
	Ready           Ready
	ReadyTimeout    Timespan
	StopTimeout     Timespan

	Network  *Network  // nil without [Network]
	Firewall *Firewall // nil without [Firewall]

	WantedBy   []string
	RequiredBy []string

	// Unit and Service are passed through to the unit as written, in order.
	Unit    []Setting
	Service []Setting

	// claims is what the guest uses that other guests may not, found at
	// parse time with the positions that conflict errors name.
	claims []claim
}

// Disk is a further block device (ubd1, ubd2, …).
type Disk struct {
	Path     string
	ReadOnly bool
}

func (d Disk) String() string {
	if d.ReadOnly {
		return d.Path + ":ro"
	}
	return d.Path
}

// ReadyKind says when a guest counts as started.
type ReadyKind int

const (
	ReadyKernel  ReadyKind = iota // the kernel answers on its management console
	ReadyConsole                  // a console line matches Ready.Pattern
	ReadyTCP                      // Ready.Port on the guest's first address accepts
	ReadyNotify                   // the guest writes READY=1 to /proc/mconsole
)

// Ready is the Ready= condition.
type Ready struct {
	Kind    ReadyKind
	Pattern *regexp.Regexp // ReadyConsole
	Port    uint16         // ReadyTCP
}

func (r Ready) String() string {
	switch r.Kind {
	case ReadyConsole:
		return "console:" + r.Pattern.String()
	case ReadyTCP:
		return fmt.Sprintf("tcp:%d", r.Port)
	case ReadyNotify:
		return "notify"
	}
	return "kernel"
}

// Network is the [Network] section.
type Network struct {
	Bridge string
	Tap    string
	MAC    net.HardwareAddr
	// Addresses the guest owns. The prefix length, when written, is the
	// on-link subnet; Addr() is the address itself.
	Addresses    []netip.Prefix
	AntiSpoofing bool
}

// Firewall is the [Firewall] section.
type Firewall struct {
	AcceptIn   []Rule
	ConnectOut []Rule
	HostAccess []Rule
	Log        bool
}

// Proto is a rule's protocol.
type Proto string

const (
	TCP  Proto = "tcp"
	UDP  Proto = "udp"
	ICMP Proto = "icmp"
)

// Rule is one PROTO/PORT[@PEER] firewall rule.
type Rule struct {
	Proto Proto
	// FromPort..ToPort is the port range for tcp and udp (equal for one port).
	FromPort, ToPort uint16
	// ICMPType is an icmp type name or number; "" means every type.
	ICMPType string
	Peer     *Peer // nil means any peer
}

func (r Rule) String() string {
	var b strings.Builder
	b.WriteString(string(r.Proto))
	switch {
	case r.Proto == ICMP && r.ICMPType != "":
		b.WriteString("/" + r.ICMPType)
	case r.Proto != ICMP && r.FromPort == r.ToPort:
		fmt.Fprintf(&b, "/%d", r.FromPort)
	case r.Proto != ICMP:
		fmt.Fprintf(&b, "/%d-%d", r.FromPort, r.ToPort)
	}
	if r.Peer != nil {
		b.WriteString("@" + r.Peer.String())
	}
	return b.String()
}

// Peer is the other end of a rule: an address range or a host name resolved
// when the guest starts, possibly negated.
type Peer struct {
	Not    bool
	Prefix netip.Prefix // valid unless Host is set
	Host   string
}

func (p Peer) String() string {
	s := p.Host
	if s == "" {
		s = p.Prefix.String()
		if p.Prefix.IsSingleIP() {
			s = p.Prefix.Addr().String()
		}
	}
	if p.Not {
		return "!" + s
	}
	return s
}

// Setting is one pass-through assignment of [Unit] or [Service].
type Setting struct {
	Key, Value string
	Pos        Pos
}

// Timespan is a systemd time span; Infinite means "no limit".
type Timespan struct {
	D        time.Duration
	Infinite bool
}

func (t Timespan) String() string { return FormatTimespan(t) }

// UnitName is the guest's systemd unit name.
func (g *Guest) UnitName() string { return "uml@" + g.Name + ".service" }
