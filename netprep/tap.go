package netprep

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Tap is a guest's tap device, open: File is the descriptor the guest's
// kernel gets (`vec0:transport=fd,fd=N,vec=0,mac=MAC`).
//
// The tap is not persistent: it vanishes by itself when the last descriptor
// of it is closed, in this process or in the guest's kernel, however they
// end. File is a blocking descriptor with close-on-exec set; os/exec's
// ExtraFiles hands it to a child without close-on-exec.
//
// UML (6.1) keeps its copy across a guest's reboot (it re-executes itself),
// but closes it for good when the guest sets vec0 down: vec0 cannot be set
// up again, and after a reboot the new kernel reuses the descriptor's number
// for another file of its own.
type Tap struct {
	File  *os.File
	Name  string
	Index int // ifindex, recorded so that cleanup never deletes another interface of the same name
}

// tunDevice is the clone device taps are created through.
const tunDevice = "/dev/net/tun"

// maxIfNameLen is the longest interface name Linux keeps; longer names are
// silently cut by some interfaces (TUNSETIFF among them).
const maxIfNameLen = unix.IFNAMSIZ - 1

// checkIfName returns an error if name cannot be used, exactly as given, as
// the name of an interface: empty, longer than Linux keeps, or containing a
// byte the kernel refuses ('/', ':', whitespace) or, for TUNSETIFF, treats
// as a pattern ('%': "tap%d" makes the kernel choose the name).
func checkIfName(name string) error {
	switch {
	case name == "":
		return errors.New("the name is empty")
	case len(name) > maxIfNameLen:
		return fmt.Errorf("the name is %d bytes long, and Linux keeps at most %d", len(name), maxIfNameLen)
	case name == "." || name == "..":
		return fmt.Errorf("%q is not allowed as an interface name", name)
	}
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case c == '%':
			return errors.New("the name contains '%', which would make the kernel choose the name")
		case c == '/' || c == ':' || c <= ' ' || c == 0x7f || c == 0xa0:
			// The kernel's isspace() counts 0xa0 (Latin-1 no-break space).
			return fmt.Errorf("the name contains %q, which is not allowed in an interface name", c)
		}
	}
	return nil
}

// CheckBridge returns nil if name is an existing bridge, else an error that
// is one sentence an administrator can act on. It looks in the network
// namespace of the calling OS thread.
func CheckBridge(name string) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	_, err := lookupBridge(name)
	return err
}

// lookupBridge returns the bridge name, or the error CheckBridge returns. The
// caller must have locked its OS thread.
func lookupBridge(name string) (netlink.Link, error) {
	if err := checkIfName(name); err != nil {
		return nil, fmt.Errorf("the bridge name %q is not a valid interface name: %w; fix Bridge= (see uml.conf(5))", name, err)
	}
	l, err := netlink.LinkByName(name)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil, fmt.Errorf("the bridge %s does not exist; create it, for example with systemd-networkd, or fix Bridge= (see uml.conf(5))", name)
	}
	if err != nil {
		return nil, fmt.Errorf("looking up the bridge %s: %w", name, err)
	}
	if l.Type() != "bridge" {
		return nil, fmt.Errorf("%s is not a bridge but %s; name a bridge in Bridge= (see uml.conf(5))", name, describeLink(l))
	}
	return l, nil
}

// describeLink names the kind of an interface for an error message: "a veth".
func describeLink(l netlink.Link) string {
	switch kind := l.Type(); kind {
	case "device":
		// netlink's name for an interface without link info: a network
		// card, the loopback.
		return "a plain network interface"
	case "tuntap":
		return "a tun/tap device"
	default:
		return "an interface of type " + kind
	}
}

// OpenTap creates the non-persistent tap name, attached to bridge, up, with
// the bridge's MTU, and returns it open. It creates the tap by opening
// /dev/net/tun with TUNSETIFF IFF_TAP|IFF_NO_PI|IFF_TUN_EXCL: it fails if
// any interface of that name already exists, and never takes one over. On
// an error after the tap was created it closes the descriptor, so that the
// tap vanishes. The tap's MAC address is the kernel's random one; the
// guest's MAC is the guest kernel's business.
//
// OpenTap acts in the network namespace of the calling OS thread.
func OpenTap(name, bridge string) (*Tap, error) {
	if err := checkIfName(name); err != nil {
		return nil, fmt.Errorf("creating tap %q: %w", name, err)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	br, err := lookupBridge(bridge)
	if err != nil {
		return nil, fmt.Errorf("creating tap %s: %w", name, err)
	}

	fd, err := unix.Open(tunDevice, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("creating tap %s: opening %s: %w", name, tunDevice, err)
	}
	tap, err := setupTap(fd, name, br)
	if err != nil {
		unix.Close(fd) // the tap, if created, vanishes with its only descriptor
		return nil, err
	}
	return tap, nil
}

// setupTap creates the tap name on the open /dev/net/tun descriptor fd and
// attaches it to the bridge br. On error the caller closes fd.
func setupTap(fd int, name string, br netlink.Link) (*Tap, error) {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return nil, fmt.Errorf("creating tap %s: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_TUN_EXCL)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		if errors.Is(err, unix.EBUSY) {
			// IFF_TUN_EXCL: the name (or an alternative name) is taken.
			return nil, tapExistsError(name)
		}
		return nil, fmt.Errorf("creating tap %s: %w", name, err)
	}
	if got := ifr.Name(); got != name {
		// Not expected: checkIfName refuses what the kernel would change.
		return nil, fmt.Errorf("creating tap %s: the kernel named it %q", name, got)
	}

	l, err := netlink.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("looking up the new tap %s: %w", name, err)
	}
	// The index must be our tap's: check that the name still leads to a
	// tun/tap, and that our descriptor's device still has the name (only
	// a rename between TUNSETIFF and the lookup could break that).
	if l.Type() != "tuntap" || l.Attrs().Name != name {
		return nil, fmt.Errorf("looking up the new tap %s: found %s named %s instead", name, describeLink(l), l.Attrs().Name)
	}
	if err := unix.IoctlIfreq(fd, unix.TUNGETIFF, ifr); err != nil {
		return nil, fmt.Errorf("reading back the new tap %s: %w", name, err)
	}
	if got := ifr.Name(); got != name {
		return nil, fmt.Errorf("creating tap %s: it was renamed to %s while being set up", name, got)
	}

	// The MTU before the bridge: a bridge whose MTU was not set by hand
	// follows the smallest MTU of its ports, and the tap's default 1500
	// would lower a larger one, for every port, until the tap had its MTU.
	if mtu := br.Attrs().MTU; l.Attrs().MTU != mtu {
		if err := netlink.LinkSetMTU(l, mtu); err != nil {
			return nil, fmt.Errorf("setting the MTU of tap %s to %d, the MTU of bridge %s: %w", name, mtu, br.Attrs().Name, err)
		}
	}
	if err := netlink.LinkSetMasterByIndex(l, br.Attrs().Index); err != nil {
		return nil, fmt.Errorf("attaching tap %s to bridge %s: %w", name, br.Attrs().Name, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return nil, fmt.Errorf("setting tap %s up: %w", name, err)
	}
	return &Tap{
		File:  os.NewFile(uintptr(fd), tunDevice+" (tap "+name+")"),
		Name:  name,
		Index: l.Attrs().Index,
	}, nil
}

// tapExistsError is the error of OpenTap when an interface named name exists.
func tapExistsError(name string) error {
	what := ""
	if l, err := netlink.LinkByName(name); err == nil {
		what = fmt.Sprintf(" (%s, index %d)", describeLink(l), l.Attrs().Index)
		if l.Attrs().Name != name {
			what = fmt.Sprintf(" (%s named %s, which has %s as an alternative name)", describeLink(l), l.Attrs().Name, name)
		}
	}
	return fmt.Errorf("creating tap %s: an interface of that name already exists%s, and a tap is never taken over: stop the guest that uses it, or delete it with `ip link delete %s` if none does", name, what, name)
}

// DeleteTap deletes the interface name only if it still has ifindex index
// and is a tun/tap device; otherwise (gone, or someone else's interface now)
// it does nothing and returns nil. Deleting a tap whose descriptors are still
// open detaches them: the guest's network is gone.
//
// DeleteTap acts in the network namespace of the calling OS thread.
func DeleteTap(name string, index int) error {
	if err := checkIfName(name); err != nil {
		return fmt.Errorf("deleting tap %q: %w", name, err)
	}
	if index <= 0 {
		return fmt.Errorf("deleting tap %s: %d is not an interface index", name, index)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	l, err := netlink.LinkByName(name)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("deleting tap %s: looking it up: %w", name, err)
	}
	// LinkByName also finds an interface by an alternative name: compare
	// the name too.
	if a := l.Attrs(); a.Index != index || a.Name != name || l.Type() != "tuntap" {
		return nil
	}
	// RTM_DELLINK names the interface by index alone.
	if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("deleting tap %s (index %d): %w", name, index, err)
	}
	return nil
}
