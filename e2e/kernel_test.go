package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"umlsd/guestimage"
	"umlsd/internal/bastion"
	"umlsd/internal/testbed"
)

// kernelStartup is what the kernel test's guest does at boot: it reports
// what its kernel lets it do, configures vec0 (IPv4 and IPv6, no module),
// takes it down and up, and pings the host both ways. On its first boot it
// then waits for the test's go (the host answering ARP for GoAddress),
// takes vec0 down, and reboots; on later boots it stays up.
const kernelStartup = `echo "UMLSD-BOOTED"
echo "UMLSD-MEMTOTAL: $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) kB"
[ -e /proc/modules ] && echo "UMLSD-MODULES: yes" || echo "UMLSD-MODULES: none"
echo "UMLSD-INSMOD: $(insmod /etc/umlsd-test.ko 2>&1 || true)"
echo "UMLSD-HOSTFS: $(mount -t hostfs none /mnt 2>&1 && echo mounted && umount /mnt)"
echo "UMLSD-STACKS: $(grep '\[stack\]' /proc/self/maps | cut -d' ' -f1) $(grep '\[stack\]' /proc/self/maps | cut -d' ' -f1)"
sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 net.ipv6.conf.vec0.accept_dad=0
up() {
	ip link set vec0 up
	ip addr add 10.1.1.20/24 dev vec0 2>/dev/null
	ip -6 addr add fd00:1::20/64 dev vec0 2>/dev/null
	ip route add default via 10.1.1.1 2>/dev/null
}
ping2() {
	v4=failed v6=failed
	for i in 1 2 3 4 5; do ping -c 1 -W 1 10.1.1.1 >/dev/null 2>&1 && { v4=ok; break; }; done
	for i in 1 2 3 4 5; do ping -6 -c 1 -W 1 fd00:1::1 >/dev/null 2>&1 && { v6=ok; break; }; done
	echo "v4=$v4 v6=$v6"
}
boot=1
[ -f /var/umlsd-rebooted ] && boot=2
up
ip link set vec0 down
up
echo "UMLSD-FLAPPED: boot=$boot $(ping2)"
if [ $boot = 1 ]; then
	(
		until arping -q -c 1 -w 1 -I vec0 -s 10.1.1.20 ` + bastion.GoAddress + ` >/dev/null 2>&1; do :; done
		ip link set vec0 down
		echo rebooted >/var/umlsd-rebooted
		sync
		echo "UMLSD-REBOOTING"
		reboot
	) &
fi
true
`

// kernelImage is the kernel test's guest image.
func kernelImage(t *testing.T) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kernel.img")
	spec := guestimage.Spec{
		Size:       32 << 20,
		Hostname:   "kernel-test",
		Startup:    kernelStartup,
		Files:      []guestimage.File{{Path: "/etc/umlsd-test.ko", Mode: 0o644, Data: []byte("not a module\n")}},
		CtrlAltDel: guestimage.Poweroff,
	}
	if err := guestimage.Build(t.Context(), path, spec); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// consoleValues are the values of every "UMLSD-KEY: VALUE" line of the
// unit's journal, in order.
func consoleValues(t *testing.T, m *testbed.Machine, unit, key string) []string {
	t.Helper()
	var values []string
	for _, match := range regexp.MustCompile(`(?m)^UMLSD-`+key+`: (.*)$`).FindAllStringSubmatch(journal(t, m, "-u", unit), -1) {
		values = append(values, match[1])
	}
	return values
}

// hostPings pings the guest from the machine and from the client on the
// bridge, over IPv4 and IPv6, and says what failed.
func hostPings(t *testing.T, m *testbed.Machine) []string {
	t.Helper()
	var failed []string
	for _, netns := range []string{"", "client"} {
		for _, addr := range []string{"10.1.1.20", "fd00:1::20"} {
			if out, stderr, err := m.Run(t.Context(), bastion.InNetns(netns, "busybox", "ping", "-c", "1", "-W", "2", addr)...); err != nil {
				failed = append(failed, fmt.Sprintf("ping %s from %q: %v: %s%s", addr, netns, err, out, stderr))
			}
		}
	}
	return failed
}

// TestProjectKernel boots a guest on umlsd's own kernel (the default
// Kernel=) under the supervisor: no modules and no hostfs; IPv6 with no
// module in the image; vec0 taken down and up, before and after a guest
// reboot, and traffic both ways each time; the same memory on every boot,
// with the kernel's personality locked to no address randomisation while
// the guest's own processes stay randomised; and nothing left after stop.
func TestProjectKernel(t *testing.T) {
	m := bastion.Boot(t, map[string]string{
		"kt": "[Guest]\nRootImage=" + imageDir + "/kernel.img\nMemory=48M\nReady=console:^UMLSD-FLAPPED: \n" +
			"[Network]\nBridge=br0\nAddress=10.1.1.20/24\nAddress=fd00:1::20/64\n" +
			"[Firewall]\nAcceptIn=icmp\nConnectOut=icmp\nHostAccess=icmp\n",
	})
	m.WriteFile(t, imageDir+"/kernel.img", kernelImage(t), 0o644)
	const unit = "uml@kt.service"
	timedStart(t, m, unit)

	t.Run("no modules, no hostfs", func(t *testing.T) {
		for key, want := range map[string]string{
			"MODULES": "none",
			// ENOSYS: there is no module loading at all.
			"INSMOD": "insmod: can't insert '/etc/umlsd-test.ko': kernel does not support requested operation",
			"HOSTFS": "mount: mounting none on /mnt failed: No such device",
		} {
			if got := consoleValues(t, m, unit, key); len(got) == 0 || got[0] != want {
				t.Errorf("UMLSD-%s: %q, want %q", key, got, want)
			}
		}
	})

	t.Run("vec0 down and up, and after a reboot", func(t *testing.T) {
		if got := consoleValues(t, m, unit, "FLAPPED"); len(got) != 1 || got[0] != "boot=1 v4=ok v6=ok" {
			t.Fatalf("after vec0 went down and up the guest's pings: %q, want boot=1 v4=ok v6=ok\n%s", got, unitContext(t, m, unit))
		}
		if failed := hostPings(t, m); len(failed) > 0 {
			t.Errorf("after vec0 went down and up:\n%s", strings.Join(failed, "\n"))
		}
		// The guest takes vec0 down and reboots: the kernel re-executes
		// itself with the tap's descriptor, which must still be the tap's.
		m.MustRun(t, "ip", "addr", "add", bastion.GoAddress+"/24", "dev", "br0")
		waitJournal(t, m, unit, "the guest rebooted")
		waitJournal(t, m, unit, "UMLSD-FLAPPED: boot=2")
		if got := consoleValues(t, m, unit, "FLAPPED"); len(got) != 2 || got[1] != "boot=2 v4=ok v6=ok" {
			t.Errorf("after a reboot with vec0 down, and vec0 down and up again, the guest's pings: %q, want boot=2 v4=ok v6=ok", got)
		}
		if failed := hostPings(t, m); len(failed) > 0 {
			t.Errorf("after the reboot:\n%s", strings.Join(failed, "\n"))
		}
		if t.Failed() {
			t.Log(unitContext(t, m, unit))
		}
	})

	t.Run("the same memory on every boot", func(t *testing.T) {
		m.MustRun(t, "systemctl", "restart", unit)
		waitJournal(t, m, unit, "UMLSD-FLAPPED: boot=2")
		got := consoleValues(t, m, unit, "MEMTOTAL")
		if len(got) < 3 {
			t.Fatalf("MemTotal of %d boots, want 3 (two starts, one reboot)", len(got))
		}
		for _, v := range got {
			if v != got[0] {
				t.Errorf("MemTotal differs between boots: %q", got)
				break
			}
		}
		if j := journal(t, m, "-u", unit); strings.Contains(j, "exec-shield gap") {
			t.Errorf("the kernel added an exec-shield gap to its memory:\n%s", logLine(j, "exec-shield"))
		}
		if p := strings.TrimSpace(m.MustRun(t, "cat", "/proc/"+kernelPID(t, m, unit)+"/personality")); p != "00040000" {
			t.Errorf("the kernel's personality is %s, want 00040000 (ADDR_NO_RANDOMIZE)", p)
		}
		for _, stacks := range consoleValues(t, m, unit, "STACKS") {
			if f := strings.Fields(stacks); len(f) != 2 || f[0] == f[1] {
				t.Errorf("two processes in the guest had their stacks at %q: the guest's own layout is not randomised", stacks)
			}
		}
	})

	t.Run("no block-layer errors", func(t *testing.T) {
		if j := journal(t, m, "-u", unit); strings.Contains(j, "error, dev ubd") {
			t.Errorf("the console shows block-layer errors:\n%s", logLine(j, "error, dev ubd"))
		}
	})

	t.Run("stop leaves nothing", func(t *testing.T) {
		start := time.Now()
		m.MustRun(t, "systemctl", "stop", unit)
		t.Logf("systemctl stop took %v", time.Since(start).Round(time.Millisecond))
		if got := journal(t, m, "-u", unit); !strings.Contains(got, "stopped: the guest shut down cleanly") {
			t.Errorf("the guest did not shut down cleanly:\n%s", got)
		}
		requireNoNetworkLeft(t, m, "kt")
	})
}
