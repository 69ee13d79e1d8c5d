package netprep

import (
	"errors"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"umlsd/internal/testbed"
)

// The tests below create real interfaces, each test (and subtest) in a
// network namespace of its own, entered by its goroutine's OS thread and
// thrown away at its end. They never touch the host's namespace.

// inNewNetns moves the calling goroutine, locked to its OS thread, into a new
// network namespace until the end of the test. It must be called from the
// test's own goroutine, and the test must not start goroutines that expect
// the namespace: they would run on other threads.
func inNewNetns(t testing.TB) {
	t.Helper()
	testbed.RequireRoot(t)
	testbed.RequireFile(t, tunDevice, "the kernel's tun driver, CONFIG_TUN")
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("opening the current network namespace: %v", err)
	}
	ns, err := netns.New() // unshare(CLONE_NEWNET) of this thread
	if err != nil {
		orig.Close()
		runtime.UnlockOSThread()
		t.Fatalf("creating a network namespace: %v", err)
	}
	t.Cleanup(func() {
		if err := netns.Set(orig); err != nil {
			// Keep the thread locked: the runtime ends it with the
			// goroutine instead of reusing it in the wrong namespace.
			t.Errorf("returning to the original network namespace: %v", err)
		} else {
			runtime.UnlockOSThread()
		}
		ns.Close()
		orig.Close()
	})
}

// tapAddLink creates l, and fails the test on error. The namespace's end
// deletes it.
func tapAddLink(t *testing.T, l netlink.Link) netlink.Link {
	t.Helper()
	if err := netlink.LinkAdd(l); err != nil {
		t.Fatalf("creating %s %s: %v", l.Type(), l.Attrs().Name, err)
	}
	got, err := netlink.LinkByName(l.Attrs().Name)
	if err != nil {
		t.Fatalf("looking up %s: %v", l.Attrs().Name, err)
	}
	return got
}

func tapAddBridge(t *testing.T, name string) netlink.Link {
	t.Helper()
	return tapAddLink(t, &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}})
}

// tapAddIfb adds an ifb, the tests' plain Ethernet interface that is neither
// a bridge nor a tap: dummy is not built into every kernel (not into the
// one of the test VM).
func tapAddIfb(t *testing.T, name string) netlink.Link {
	t.Helper()
	return tapAddLink(t, &netlink.Ifb{LinkAttrs: netlink.LinkAttrs{Name: name}})
}

func tapAddVeth(t *testing.T, name string) netlink.Link {
	t.Helper()
	return tapAddLink(t, &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"})
}

// tapOpen is OpenTap, failing the test on error and closing the tap at the
// end of the test.
func tapOpen(t *testing.T, name, bridge string) *Tap {
	t.Helper()
	tap, err := OpenTap(name, bridge)
	if err != nil {
		t.Fatalf("OpenTap(%q, %q): %v", name, bridge, err)
	}
	t.Cleanup(func() { tap.File.Close() })
	return tap
}

func tapSetMaster(t *testing.T, l, master netlink.Link) {
	t.Helper()
	if err := netlink.LinkSetMasterByIndex(l, master.Attrs().Index); err != nil {
		t.Fatalf("attaching %s to %s: %v", l.Attrs().Name, master.Attrs().Name, err)
	}
}

func tapSetMTU(t *testing.T, l netlink.Link, mtu int) {
	t.Helper()
	if err := netlink.LinkSetMTU(l, mtu); err != nil {
		t.Fatalf("setting the MTU of %s to %d: %v", l.Attrs().Name, mtu, err)
	}
}

func tapSetUp(t *testing.T, l netlink.Link) {
	t.Helper()
	if err := netlink.LinkSetUp(l); err != nil {
		t.Fatalf("setting %s up: %v", l.Attrs().Name, err)
	}
}

// tapLinkState is what the tests compare of an interface.
type tapLinkState struct {
	Name        string
	Index       int
	Type        string
	MasterIndex int
	MTU         int
	Up          bool
}

func tapStateOf(l netlink.Link) tapLinkState {
	a := l.Attrs()
	return tapLinkState{
		Name:        a.Name,
		Index:       a.Index,
		Type:        l.Type(),
		MasterIndex: a.MasterIndex,
		MTU:         a.MTU,
		Up:          a.Flags&net.FlagUp != 0,
	}
}

// lookup returns the interface name, or nil if there is none.
func tapLookup(t *testing.T, name string) netlink.Link {
	t.Helper()
	l, err := netlink.LinkByName(name)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil
	}
	if err != nil {
		t.Fatalf("looking up %s: %v", name, err)
	}
	return l
}

// tapMustState returns the state of the interface name, which must exist.
func tapMustState(t *testing.T, name string) tapLinkState {
	t.Helper()
	l := tapLookup(t, name)
	if l == nil {
		t.Fatalf("%s does not exist", name)
	}
	return tapStateOf(l)
}

// tapLinkStates returns the state of every interface, by name.
func tapLinkStates(t *testing.T) map[string]tapLinkState {
	t.Helper()
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatalf("listing interfaces: %v", err)
	}
	m := make(map[string]tapLinkState)
	for _, l := range links {
		m[l.Attrs().Name] = tapStateOf(l)
	}
	return m
}

// tapLinkNames lists the names of all interfaces.
func tapLinkNames(t *testing.T) []string {
	t.Helper()
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatalf("listing interfaces: %v", err)
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	return names
}

// tapWaitGone waits, briefly, until no interface has this index: the kernel
// unregisters a tap when its last descriptor is closed, which another
// process's copy (a fork in flight) may delay.
func tapWaitGone(t *testing.T, index int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		l, err := netlink.LinkByIndex(index)
		if errors.As(err, new(netlink.LinkNotFoundError)) {
			return
		}
		if err != nil {
			t.Fatalf("looking up index %d: %v", index, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s (index %d) still exists after 5 s", l.Attrs().Name, index)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// tapTunName returns the name of the interface a /dev/net/tun descriptor is
// attached to (TUNGETIFF).
func tapTunName(t *testing.T, tap *Tap) string {
	t.Helper()
	ifr, err := unix.NewIfreq("")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlIfreq(int(tap.File.Fd()), unix.TUNGETIFF, ifr); err != nil {
		t.Fatalf("TUNGETIFF on the descriptor of %s: %v", tap.Name, err)
	}
	return ifr.Name()
}

func TestTapOpen(t *testing.T) {
	tests := []struct {
		name string
		// bridgeMTU is given at creation: the bridge then adjusts its
		// MTU to its ports' smallest.
		bridgeMTU int
		// setMTU is set after creation, as by hand: the bridge keeps it.
		setMTU int
		want   int
	}{
		{name: "default MTU", want: 1500},
		{name: "small MTU at creation", bridgeMTU: 1400, want: 1400},
		{name: "jumbo MTU at creation", bridgeMTU: 9000, want: 9000},
		{name: "jumbo MTU set by hand", setMTU: 9000, want: 9000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inNewNetns(t)
			br := tapAddLink(t, &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0", MTU: tt.bridgeMTU}})
			if tt.setMTU != 0 {
				tapSetMTU(t, br, tt.setMTU)
			}

			tap := tapOpen(t, "uml-test", "br0")

			if tap.Name != "uml-test" {
				t.Errorf("Name = %q, want uml-test", tap.Name)
			}
			l := tapLookup(t, "uml-test")
			if l == nil {
				t.Fatal("uml-test does not exist after OpenTap")
			}
			want := tapLinkState{
				Name:        "uml-test",
				Index:       tap.Index,
				Type:        "tuntap",
				MasterIndex: br.Attrs().Index,
				MTU:         tt.want,
				Up:          true,
			}
			if diff := cmp.Diff(want, tapStateOf(l)); diff != "" {
				t.Errorf("the tap (-want +got):\n%s", diff)
			}
			tt2, ok := l.(*netlink.Tuntap)
			if !ok {
				t.Fatalf("the tap is a %T", l)
			}
			type tunState struct {
				Mode       netlink.TuntapMode
				NoPI       bool
				VnetHdr    bool
				NonPersist bool
			}
			wantTun := tunState{Mode: netlink.TUNTAP_MODE_TAP, NoPI: true, NonPersist: true}
			gotTun := tunState{
				Mode:       tt2.Mode,
				NoPI:       tt2.Flags&netlink.TUNTAP_NO_PI != 0,
				VnetHdr:    tt2.Flags&netlink.TUNTAP_VNET_HDR != 0,
				NonPersist: tt2.NonPersist,
			}
			if diff := cmp.Diff(wantTun, gotTun); diff != "" {
				t.Errorf("the tap's tun settings (-want +got):\n%s", diff)
			}
			if got := tapMustState(t, "br0").MTU; got != tt.want {
				t.Errorf("the bridge's MTU changed to %d, want %d", got, tt.want)
			}

			// The descriptor is the tap's: a frame written to it is
			// received by the tap.
			if got := tapTunName(t, tap); got != "uml-test" {
				t.Errorf("the descriptor belongs to %q, want uml-test", got)
			}
			before := l.Attrs().Statistics.RxPackets
			frame := make([]byte, 60)
			copy(frame, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1, 0x88, 0xb5})
			if _, err := tap.File.Write(frame); err != nil {
				t.Fatalf("writing a frame to the tap: %v", err)
			}
			if got := tapLookup(t, "uml-test").Attrs().Statistics.RxPackets; got != before+1 {
				t.Errorf("the tap received %d packets after one frame was written, want %d", got, before+1)
			}

			if err := tap.File.Close(); err != nil {
				t.Fatalf("closing the tap: %v", err)
			}
			tapWaitGone(t, tap.Index)
		})
	}
}

// A tap that cannot be set up (here: a bridge MTU above the tap's maximum)
// leaves nothing behind.
func TestTapOpenFailsAfterCreation(t *testing.T) {
	inNewNetns(t)
	br := tapAddBridge(t, "br0")
	tapSetMTU(t, br, 65535) // a tap's maximum is 65535 - 14
	before := tapLinkNames(t)

	tap, err := OpenTap("uml-test", "br0")
	if err == nil {
		tap.File.Close()
		t.Fatal("OpenTap succeeded with a bridge MTU of 65535")
	}
	if want := "setting the MTU of tap uml-test to 65535"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not contain %q", err, want)
	}
	if l := tapLookup(t, "uml-test"); l != nil {
		tapWaitGone(t, l.Attrs().Index)
	}
	if diff := cmp.Diff(before, tapLinkNames(t)); diff != "" {
		t.Errorf("interfaces (-before +after):\n%s", diff)
	}
}

// OpenTap never takes over an interface of the same name, whatever it is.
func TestTapOpenExclusive(t *testing.T) {
	const name = "uml-test"
	tests := []struct {
		name string
		// existing creates the interface that has, or is also called, name.
		existing func(t *testing.T, br netlink.Link)
		wantErr  string
	}{{
		name: "tap of another guest",
		existing: func(t *testing.T, br netlink.Link) {
			tap := tapOpen(t, name, br.Attrs().Name)
			t.Cleanup(func() {
				if got := tapTunName(t, tap); got != name {
					t.Errorf("the first tap's descriptor now belongs to %q", got)
				}
			})
		},
		wantErr: "(a tun/tap device, index ",
	}, {
		name: "persistent tap",
		existing: func(t *testing.T, br netlink.Link) {
			l := tapAddLink(t, &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: name}, Mode: netlink.TUNTAP_MODE_TAP})
			tapSetMTU(t, l, 1280)
		},
		wantErr: "(a tun/tap device, index ",
	}, {
		name: "ifb on the bridge",
		existing: func(t *testing.T, br netlink.Link) {
			l := tapAddIfb(t, name)
			tapSetMaster(t, l, br)
			tapSetUp(t, l)
		},
		wantErr: "(an interface of type ifb, index ",
	}, {
		name: "ifb elsewhere",
		existing: func(t *testing.T, br netlink.Link) {
			tapSetMTU(t, tapAddIfb(t, name), 1280)
		},
		wantErr: "(an interface of type ifb, index ",
	}, {
		name: "veth",
		existing: func(t *testing.T, br netlink.Link) {
			l := tapAddVeth(t, name)
			tapSetUp(t, l)
		},
		wantErr: "(an interface of type veth, index ",
	}, {
		name: "alternative name",
		existing: func(t *testing.T, br netlink.Link) {
			l := tapAddIfb(t, "ifb9")
			if err := netlink.LinkAddAltName(l, name); err != nil {
				t.Fatalf("adding the alternative name: %v", err)
			}
		},
		wantErr: "(an interface of type ifb named ifb9, which has uml-test as an alternative name)",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inNewNetns(t)
			br := tapAddBridge(t, "br0")
			tt.existing(t, br)
			l := tapLookup(t, name)
			if l == nil {
				t.Fatalf("no interface is called %s", name)
			}
			before := tapStateOf(l)
			names := tapLinkNames(t)

			tap, err := OpenTap(name, "br0")
			if err == nil {
				tap.File.Close()
				t.Fatal("OpenTap succeeded on an existing name")
			}
			for _, want := range []string{"creating tap uml-test: an interface of that name already exists", tt.wantErr, "`ip link delete uml-test`"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			if diff := cmp.Diff(before, tapMustState(t, name)); diff != "" {
				t.Errorf("the existing interface changed (-before +after):\n%s", diff)
			}
			if diff := cmp.Diff(names, tapLinkNames(t)); diff != "" {
				t.Errorf("interfaces (-before +after):\n%s", diff)
			}
		})
	}
}

// The tap's name may be the bridge's own: it is taken.
func TestTapOpenBridgeName(t *testing.T) {
	inNewNetns(t)
	br := tapAddBridge(t, "br0")
	_, err := OpenTap("br0", "br0")
	if err == nil || !strings.Contains(err.Error(), "already exists (an interface of type bridge, index ") {
		t.Errorf("OpenTap(br0, br0) = %v, want an error naming the bridge", err)
	}
	if diff := cmp.Diff(tapStateOf(br), tapMustState(t, "br0")); diff != "" {
		t.Errorf("the bridge changed (-before +after):\n%s", diff)
	}
}

func TestTapOpenInvalidName(t *testing.T) {
	tests := []struct {
		name    string
		tap     string
		wantErr string
	}{
		{"16 bytes", "uml-abcdefghijkl", `creating tap "uml-abcdefghijkl": the name is 16 bytes long, and Linux keeps at most 15`},
		{"empty", "", `creating tap "": the name is empty`},
		{"pattern", "uml%d", "which would make the kernel choose the name"},
		{"slash", "uml/a", `the name contains '/'`},
		{"colon", "uml:a", `the name contains ':'`},
		{"space", "uml a", `the name contains ' '`},
		{"newline", "uml\n", `the name contains '\n'`},
		{"dot", ".", `"." is not allowed as an interface name`},
		{"dot dot", "..", `".." is not allowed as an interface name`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inNewNetns(t)
			tapAddBridge(t, "br0")
			before := tapLinkNames(t)
			tap, err := OpenTap(tt.tap, "br0")
			if err == nil {
				tap.File.Close()
				t.Fatalf("OpenTap(%q) succeeded", tt.tap)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not contain %q", err, tt.wantErr)
			}
			if diff := cmp.Diff(before, tapLinkNames(t)); diff != "" {
				t.Errorf("interfaces (-before +after):\n%s", diff)
			}
		})
	}
}

func TestTapOpenBadBridge(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T)
		wantErr string
	}{{
		name:    "missing",
		setup:   func(t *testing.T) {},
		wantErr: "creating tap uml-test: the bridge br0 does not exist; ",
	}, {
		name:    "ifb",
		setup:   func(t *testing.T) { tapAddIfb(t, "br0") },
		wantErr: "creating tap uml-test: br0 is not a bridge but an interface of type ifb; ",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inNewNetns(t)
			tt.setup(t)
			before := tapLinkNames(t)
			tap, err := OpenTap("uml-test", "br0")
			if err == nil {
				tap.File.Close()
				t.Fatal("OpenTap succeeded")
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not contain %q", err, tt.wantErr)
			}
			if diff := cmp.Diff(before, tapLinkNames(t)); diff != "" {
				t.Errorf("interfaces (-before +after):\n%s", diff)
			}
		})
	}
}

func TestTapCheckBridge(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T)
		bridge  string
		wantErr string // "" for none
	}{{
		name:   "bridge",
		setup:  func(t *testing.T) { tapAddBridge(t, "br0") },
		bridge: "br0",
	}, {
		name:   "bridge up",
		setup:  func(t *testing.T) { tapSetUp(t, tapAddBridge(t, "br0")) },
		bridge: "br0",
	}, {
		name:    "missing",
		setup:   func(t *testing.T) {},
		bridge:  "br0",
		wantErr: "the bridge br0 does not exist; create it, for example with systemd-networkd, or fix Bridge= (see uml.conf(5))",
	}, {
		name:    "ifb",
		setup:   func(t *testing.T) { tapAddIfb(t, "br0") },
		bridge:  "br0",
		wantErr: "br0 is not a bridge but an interface of type ifb; name a bridge in Bridge= (see uml.conf(5))",
	}, {
		name:    "veth",
		setup:   func(t *testing.T) { tapAddVeth(t, "br0") },
		bridge:  "br0",
		wantErr: "br0 is not a bridge but an interface of type veth; name a bridge in Bridge= (see uml.conf(5))",
	}, {
		name:    "tap",
		setup:   func(t *testing.T) { tapAddBridge(t, "br1"); tapOpen(t, "br0", "br1") },
		bridge:  "br0",
		wantErr: "br0 is not a bridge but a tun/tap device; name a bridge in Bridge= (see uml.conf(5))",
	}, {
		name:    "loopback",
		setup:   func(t *testing.T) {},
		bridge:  "lo",
		wantErr: "lo is not a bridge but a plain network interface; name a bridge in Bridge= (see uml.conf(5))",
	}, {
		name:    "name too long",
		setup:   func(t *testing.T) {},
		bridge:  "br-abcdefghijklm",
		wantErr: `the bridge name "br-abcdefghijklm" is not a valid interface name: the name is 16 bytes long, and Linux keeps at most 15; fix Bridge= (see uml.conf(5))`,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inNewNetns(t)
			tt.setup(t)
			err := CheckBridge(tt.bridge)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tt.wantErr {
				t.Errorf("CheckBridge(%q) = %q, want %q", tt.bridge, got, tt.wantErr)
			}
		})
	}
}

func TestTapDelete(t *testing.T) {
	const name = "uml-test"
	tests := []struct {
		name string
		// setup returns the index given to DeleteTap.
		setup func(t *testing.T) (index int)
		// deleted: the call deletes the interface name; otherwise it
		// changes nothing.
		deleted bool
	}{{
		name:    "our tap, open",
		setup:   func(t *testing.T) int { return tapOpen(t, name, "br0").Index },
		deleted: true,
	}, {
		name: "our tap, already gone",
		setup: func(t *testing.T) int {
			tap := tapOpen(t, name, "br0")
			tap.File.Close()
			tapWaitGone(t, tap.Index)
			return tap.Index
		},
	}, {
		name: "another tap has the name now",
		setup: func(t *testing.T) int {
			old := tapOpen(t, name, "br0")
			old.File.Close()
			tapWaitGone(t, old.Index)
			tapOpen(t, name, "br0")
			return old.Index
		},
	}, {
		name: "an ifb has the name now",
		setup: func(t *testing.T) int {
			old := tapOpen(t, name, "br0")
			old.File.Close()
			tapWaitGone(t, old.Index)
			tapAddIfb(t, name)
			return old.Index
		},
	}, {
		name: "same index, not a tap",
		setup: func(t *testing.T) int {
			l := tapAddLink(t, &netlink.Ifb{LinkAttrs: netlink.LinkAttrs{Name: name, Index: 4242}})
			if l.Attrs().Index != 4242 {
				t.Fatalf("the ifb has index %d, want 4242", l.Attrs().Index)
			}
			return 4242
		},
	}, {
		name: "the name is only an alternative name of our tap",
		setup: func(t *testing.T) int {
			tap := tapOpen(t, "uml-other", "br0")
			if err := netlink.LinkAddAltName(tapLookup(t, "uml-other"), name); err != nil {
				t.Fatalf("adding the alternative name: %v", err)
			}
			return tap.Index
		},
	}, {
		name:  "missing",
		setup: func(t *testing.T) int { return 4242 },
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inNewNetns(t)
			tapAddBridge(t, "br0")
			index := tt.setup(t)
			want := tapLinkStates(t)
			if tt.deleted {
				if _, ok := want[name]; !ok {
					t.Fatalf("no interface is called %s", name)
				}
				delete(want, name)
			}

			// Twice: DeleteTap is idempotent.
			for i := range 2 {
				if err := DeleteTap(name, index); err != nil {
					t.Fatalf("DeleteTap(%q, %d), call %d: %v", name, index, i+1, err)
				}
			}
			if diff := cmp.Diff(want, tapLinkStates(t)); diff != "" {
				t.Errorf("interfaces (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTapDeleteInvalid(t *testing.T) {
	tests := []struct {
		name    string
		tap     string
		index   int
		wantErr string
	}{
		{"name too long", "uml-abcdefghijkl", 7, `deleting tap "uml-abcdefghijkl": the name is 16 bytes long, and Linux keeps at most 15`},
		{"index zero", "uml-test", 0, "deleting tap uml-test: 0 is not an interface index"},
		{"negative index", "uml-test", -1, "deleting tap uml-test: -1 is not an interface index"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inNewNetns(t)
			tapAddBridge(t, "br0")
			tapOpen(t, "uml-test", "br0")
			before := tapLinkNames(t)
			err := DeleteTap(tt.tap, tt.index)
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("DeleteTap(%q, %d) = %v, want %q", tt.tap, tt.index, err, tt.wantErr)
			}
			if diff := cmp.Diff(before, tapLinkNames(t)); diff != "" {
				t.Errorf("interfaces (-before +after):\n%s", diff)
			}
		})
	}
}
