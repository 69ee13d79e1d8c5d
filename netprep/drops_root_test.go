package netprep

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ether is an Ethernet frame.
func ether(dst, src net.HardwareAddr, etherType uint16, payload []byte) []byte {
	f := append(append(append([]byte{}, dst...), src...), byte(etherType>>8), byte(etherType))
	return append(f, payload...)
}

// udp4 is an IPv4 UDP packet, with a valid header checksum: the bridge
// hands iptables only well-formed headers.
func udp4(src, dst string, port uint16) []byte {
	h := make([]byte, 20+8)
	h[0], h[8], h[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(h[2:], uint16(len(h)))
	copy(h[12:], netip.MustParseAddr(src).AsSlice())
	copy(h[16:], netip.MustParseAddr(dst).AsSlice())
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(h[10:], ^uint16(sum))
	binary.BigEndian.PutUint16(h[20:], 40000)
	binary.BigEndian.PutUint16(h[22:], port)
	binary.BigEndian.PutUint16(h[24:], 8)
	return h
}

// udp6 is an IPv6 UDP packet.
func udp6(src, dst string, port uint16) []byte {
	h := make([]byte, 40+8)
	h[0], h[6], h[7] = 0x60, 17, 64
	binary.BigEndian.PutUint16(h[4:], 8)
	copy(h[8:], netip.MustParseAddr(src).AsSlice())
	copy(h[24:], netip.MustParseAddr(dst).AsSlice())
	binary.BigEndian.PutUint16(h[40:], 40000)
	binary.BigEndian.PutUint16(h[42:], port)
	binary.BigEndian.PutUint16(h[44:], 8)
	return h
}

// icmp6 is an ICMPv6 message of type typ from src, with body.
func icmp6(src, dst string, typ byte, body []byte) []byte {
	h := make([]byte, 40, 40+4+len(body))
	h[0], h[6], h[7] = 0x60, 58, 255
	binary.BigEndian.PutUint16(h[4:], uint16(4+len(body)))
	copy(h[8:], netip.MustParseAddr(src).AsSlice())
	copy(h[24:], netip.MustParseAddr(dst).AsSlice())
	return append(append(h, typ, 0, 0, 0), body...)
}

// neighbourAdvert says that target is at mac.
func neighbourAdvert(target string, mac net.HardwareAddr) []byte {
	body := append([]byte{0x20, 0, 0, 0}, netip.MustParseAddr(target).AsSlice()...)
	return append(body, append([]byte{2, 1}, mac...)...)
}

// arpReply says that ip is at mac.
func arpReply(mac net.HardwareAddr, ip string, to net.HardwareAddr, toIP string) []byte {
	a := []byte{0, 1, 8, 0, 6, 4, 0, 2}
	a = append(append(a, mac...), netip.MustParseAddr(ip).AsSlice()...)
	return append(append(a, to...), netip.MustParseAddr(toIP).AsSlice()...)
}

// TestForgedFramesAreDropped writes frames into a real tap on a real bridge
// as a guest would send them, with the guest's firewall installed: each
// forged one (IPv4 and IPv6 source, MAC, ARP sender, neighbour
// advertisement, router advertisement, a VLAN tag) is dropped and counted
// as spoofed, a packet the policy does not allow as policy, and the
// guest's own allowed packets pass. The bridge never learns a forged MAC
// on the guest's port.
func TestForgedFramesAreDropped(t *testing.T) {
	inNewNetns(t)
	g := parse(t, "fenced", guestHead+`[Network]
Bridge=br0
Tap=uml-fenced
MAC=52:54:00:12:34:56
Address=10.1.1.10/24 fd00:1::10/64
[Firewall]
ConnectOut=udp/53
`)
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
	if err := netlink.LinkAdd(br); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"10.1.1.1/24", "fd00:1::1/64"} {
		addr, _ := netlink.ParseAddr(a)
		addr.Flags = 0x80 // IFA_F_NODAD: usable at once
		if err := netlink.AddrAdd(br, addr); err != nil {
			t.Fatal(err)
		}
	}
	if err := netlink.LinkSetUp(br); err != nil {
		t.Fatal(err)
	}
	if _, err := EnableBridgeFilter(t.Context(), "/proc/sys", []string{"modprobe"}); err != nil {
		t.Fatal(err)
	}
	rs, err := Rules(g, nil)
	if err != nil {
		t.Fatal(err)
	}
	fw := NewFirewall()
	if err := fw.Apply(t.Context(), g.Name, rs); err != nil {
		t.Fatal(err)
	}
	tap, err := OpenTap(g.Network.Tap, "br0")
	if err != nil {
		t.Fatal(err)
	}
	defer tap.File.Close()
	l, err := netlink.LinkByName("br0")
	if err != nil {
		t.Fatal(err)
	}
	brMAC, mac := l.Attrs().HardwareAddr, g.Network.MAC
	other, _ := net.ParseMAC("52:54:00:00:00:99")
	frames := []struct {
		name  string
		frame []byte
	}{
		{"allowed", ether(brMAC, mac, 0x0800, udp4("10.1.1.10", "10.1.1.1", 53))},
		{"not in ConnectOut", ether(brMAC, mac, 0x0800, udp4("10.1.1.10", "10.1.1.1", 9999))},
		{"forged IPv4 source", ether(brMAC, mac, 0x0800, udp4("10.1.1.99", "10.1.1.1", 53))},
		{"forged IPv6 source", ether(brMAC, mac, 0x86dd, udp6("fd00:1::99", "fd00:1::1", 53))},
		{"forged MAC", ether(brMAC, other, 0x0800, udp4("10.1.1.10", "10.1.1.1", 53))},
		{"forged ARP reply", ether(brMAC, mac, 0x0806, arpReply(mac, "10.1.1.77", brMAC, "10.1.1.1"))},
		{"VLAN tag", ether(brMAC, mac, 0x8100, append([]byte{0, 5, 8, 0}, udp4("10.1.1.99", "10.1.1.1", 53)...))},
		{"own neighbour advertisement", ether(brMAC, mac, 0x86dd, icmp6(linkLocal(mac).String(), "fe80::1", 136, neighbourAdvert("fd00:1::10", mac)))},
		{"forged neighbour advertisement", ether(brMAC, mac, 0x86dd, icmp6(linkLocal(mac).String(), "fe80::1", 136, neighbourAdvert("fd00:1::1", mac)))},
		{"forged neighbour advertisement from its own address", ether(brMAC, mac, 0x86dd, icmp6("fd00:1::10", "fd00:1::1", 136, neighbourAdvert("fd00:1::1", mac)))},
		{"router advertisement", ether(brMAC, mac, 0x86dd, icmp6(linkLocal(mac).String(), "ff02::1", 134, make([]byte, 12)))},
	}
	for _, f := range frames {
		if _, err := tap.File.Write(f.frame); err != nil {
			t.Fatalf("writing the %s frame: %v", f.name, err)
		}
	}
	want := Drops{Spoofed: 8, Policy: 1}
	var got Drops
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if got, err = fw.Drops(t.Context(), g.Name); err != nil {
			t.Fatal(err)
		}
		if got == want || time.Now().After(deadline) {
			break
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("drops (-want +got):\n%s\n%s", diff, snapshotCounters(t))
	}
	fdb, err := netlink.NeighList(tap.Index, unix.AF_BRIDGE)
	if err != nil {
		t.Fatal(err)
	}
	learned := map[string]bool{}
	for _, n := range fdb {
		learned[n.HardwareAddr.String()] = true
	}
	if learned[other.String()] || !learned[mac.String()] {
		t.Errorf("the bridge learned %v on the guest's tap; want the guest's MAC %s and not the forged %s", learned, mac, other)
	}
	if err := fw.Teardown(t.Context(), g.Name); err != nil {
		t.Fatal(err)
	}
	if got, err := fw.Drops(t.Context(), g.Name); err != nil || got != (Drops{}) {
		t.Errorf("after teardown, Drops = %+v, %v; want nothing counted", got, err)
	}
}
