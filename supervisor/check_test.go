package supervisor

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"umlsd/config"
	"umlsd/cow"
	"umlsd/internal/testbed"
)

// fakeLookup resolves logserver only.
func fakeLookup(_ context.Context, host string) ([]netip.Addr, error) {
	if host == "logserver" {
		return []netip.Addr{netip.MustParseAddr("10.0.0.5")}, nil
	}
	return nil, errors.New("no such host")
}

// procSys makes a /proc/sys with br_netfilter's sysctls at values (none:
// the module is not loaded).
func procSys(t *testing.T, values ...string) string {
	t.Helper()
	dir := t.TempDir()
	for i, name := range []string{"bridge-nf-call-iptables", "bridge-nf-call-ip6tables"}[:len(values)] {
		path := filepath.Join(dir, "net", "bridge", name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(values[i]+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// testChecker is a Checker of fake accounts and host names, br_netfilter
// loaded and on, and a modprobe that fails.
func testChecker(t *testing.T, db *fakeAccounts) *Checker {
	return &Checker{
		accounts: db,
		lookup:   fakeLookup,
		procSys:  procSys(t, "1", "1"),
		modprobe: []string{"sh", "-c", "echo 'modprobe: FATAL: Module br_netfilter not found' >&2; exit 1", "modprobe"},
		unitOf:   func(int) string { return "" },
		root:     true,
	}
}

func TestCheck(t *testing.T) {
	dir, image := images(t)
	fakeKernelFile(t, dir)
	secret := filepath.Join(dir, "secret.img")
	if err := os.WriteFile(secret, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "other.img")
	if err := os.WriteFile(other, make([]byte, 512), 0o644); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "good.cow")
	foreign := filepath.Join(dir, "foreign.cow")
	for cowFile, backing := range map[string]string{good: image, foreign: other} {
		if err := cow.Create(cowFile, backing); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(cowFile, 0o666); err != nil {
			t.Fatal(err)
		}
	}
	// A COW made for an image that then changed.
	changed := filepath.Join(dir, "changed.img")
	if err := os.WriteFile(changed, make([]byte, 512), 0o644); err != nil {
		t.Fatal(err)
	}
	made, later := time.Unix(1700000000, 0), time.Unix(1700003600, 0)
	if err := os.Chtimes(changed, made, made); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(dir, "stale.cow")
	if err := cow.Create(stale, changed); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(stale, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(changed, later, later); err != nil {
		t.Fatal(err)
	}
	const (
		base   = "[Guest]\nKernel=DIR/linux\nRootImage=IMAGE\nCow=DIR/new.cow\nUser=uml-ok\n"
		newCow = "note: the COW file DIR/new.cow does not exist yet; the guest's first start creates it on RootImage=IMAGE"
		bridge = "[Network]\nBridge=umlsd-nobr\nAddress=10.0.0.2\n"
		noBr   = "problem: /etc/uml/g.conf: Bridge=umlsd-nobr: the bridge umlsd-nobr does not exist; create it, for example with systemd-networkd, or fix Bridge= (see uml.conf(5))"
	)
	tests := []struct {
		name, conf string
		checker    func(*Checker)
		want       []string // severity: message
	}{
		{"ready", base, nil, []string{boots, newCow}},
		{"existing cow", base + "Cow=" + good + "\n", nil, []string{boots}},
		{"default account not created yet", base + "User=\n", nil, []string{
			"note: the guest's account uml-g does not exist yet; the guest's first start creates it, as a system user without a login",
			boots,
			newCow,
		}},
		{"default account not created yet cannot read", base + "User=\nRootImage=" + secret + "\n", nil, []string{
			"note: the guest's account uml-g does not exist yet; the guest's first start creates it, as a system user without a login",
			boots,
			"problem: RootImage=DIR/secret.img: user uml-g (not created yet, so only the permissions for others apply) may not read it; change its owner, group or mode (the kernel runs as that user)",
			"note: the COW file DIR/new.cow does not exist yet; the guest's first start creates it on RootImage=DIR/secret.img",
		}},
		{"every problem, not just the first", base + "Kernel=/nonexistent/linux\nRootImage=DIR/missing.img\nDisk=" + other + "\nCow=" + foreign + "\n", nil, []string{
			"problem: Kernel=/nonexistent/linux is not a program file; install that kernel, or fix Kernel=",
			"problem: RootImage=DIR/missing.img: no such file or directory",
			"problem: Disk=DIR/other.img: user uml-ok (uid 2000, gid 2000) may not read and write it; change its owner, group or mode (the kernel runs as that user)",
			"problem: COW file DIR/foreign.cow was made for backing file DIR/other.img, not RootImage=DIR/missing.img; set RootImage= to that file, or move the COW file away to start afresh",
		}},
		{"unknown user: the files are still checked", base + "User=nobody-here\nRootImage=" + secret + "\nCow=" + stale + "\n", nil, []string{
			"problem: there is no user nobody-here (User=); create it (useradd --system nobody-here) or remove User= to use the default account",
			boots,
			"problem: COW file DIR/stale.cow was made for backing file DIR/changed.img, not RootImage=DIR/secret.img; set RootImage= to that file, or move the COW file away to start afresh",
		}},
		{"stale cow", base + "RootImage=" + changed + "\nCow=" + stale + "\n", nil, []string{
			boots,
			"problem: backing file DIR/changed.img changed since the COW file was made: it was modified at 2023-11-14 23:13:20 UTC (1700003600), the COW header says 2023-11-14 22:13:20 UTC (1700000000); the kernel refuses such a COW file and panics at boot; if its contents did not change (it was only touched), touch -d @1700000000 DIR/changed.img restores the mtime; otherwise restore the backing file the COW file was made from, or recreate the COW file, which discards the guest's changes",
		}},
		{"uid of another guest's default account", base + "User=2005\nGroup=guests\n", nil, []string{
			"problem: the guest's account 2005 (uid 2005) is also the account of guest dns (/etc/uml/dns.conf); give each guest its own account, or name the shared one with User= in both",
			boots,
			newCow,
		}},
		{"missing bridge, unresolvable host", base + bridge + "[Firewall]\nConnectOut=udp/514@logserver tcp/25@mailhost\n", nil, []string{
			noBr,
			"problem: /etc/uml/g.conf: the rule tcp/25@mailhost names the host mailhost, which does not resolve (no such host); fix the name or the host's resolver (/etc/hosts), or write an address",
			boots,
			newCow,
		}},
		{"br_netfilter not loaded", base + bridge, func(c *Checker) {
			c.procSys = procSys(t)
			c.modprobe = []string{"sh", "-c", `test "$*" = "--dry-run br_netfilter"`, "modprobe"}
		}, []string{
			noBr,
			"note: the kernel module br_netfilter, which the guest's firewall needs, is not loaded; the guest's start loads it (to load it at boot: echo br_netfilter >/etc/modules-load.d/br_netfilter.conf)",
			boots,
			newCow,
		}},
		{"br_netfilter missing", base + bridge, func(c *Checker) { c.procSys = procSys(t) }, []string{
			noBr,
			"problem: the kernel module br_netfilter, which the guest's firewall needs, is not loaded, and sh -c echo 'modprobe: FATAL: Module br_netfilter not found' >&2; exit 1 modprobe --dry-run br_netfilter failed (exit status 1: modprobe: FATAL: Module br_netfilter not found); install the kernel's modules, or use a kernel with CONFIG_BRIDGE_NETFILTER",
			boots,
			newCow,
		}},
		{"bridge filter off", base + bridge, func(c *Checker) { c.procSys = procSys(t, "0", "1") }, []string{
			noBr,
			"note: net.bridge.bridge-nf-call-iptables is not 1, as the guest's firewall needs; the guest's start sets it (to set it at boot: echo net.bridge.bridge-nf-call-iptables=1 >/etc/sysctl.d/50-umlsd.conf)",
			boots,
			newCow,
		}},
	}
	others := []*config.Guest{parseGuest(t, "dns", "[Guest]\nRootImage=/srv/dns.img\n")}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conf := strings.NewReplacer("IMAGE", image, "DIR", dir).Replace(tt.conf)
			g := parseGuest(t, "g", conf)
			db := newFakeAccounts()
			c := testChecker(t, db)
			if tt.checker != nil {
				tt.checker(c)
			}
			got := findingLines(c.Check(t.Context(), g, others), dir, image)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("findings (-want +got):\n%s", diff)
			}
			if len(db.created) != 0 {
				t.Errorf("Check created the accounts %q", db.created)
			}
			if _, err := os.Stat(filepath.Join(dir, "new.cow")); err == nil {
				t.Error("Check created the COW file")
			}
		})
	}
}

// boots is the info finding for the kernel fakeKernelFile makes.
const boots = "info: the guest boots Linux 6.1.0-test (Kernel=DIR/linux)"

// fakeKernelFile makes dir/linux, a program that says it is a User-Mode Linux
// kernel: /usr/bin/true with a kernel's banner and build configuration.
func fakeKernelFile(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile("/usr/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, "\x00Linux version 6.1.0-test (test@test) #1\n\x00#\n\x00# Automatically generated file; DO NOT EDIT.\n\x00# Linux/um 6.1.0 Kernel Configuration\n\x00CONFIG_UML=y\n\x00"...)
	path := filepath.Join(dir, "linux")
	if err := os.WriteFile(path, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// findingLines are findings as "severity: message", with the test's
// directory, image and times replaced by names.
func findingLines(fs []Finding, dir, image string) []string {
	var lines []string
	for _, f := range fs {
		lines = append(lines, string(f.Severity)+": "+strings.NewReplacer(image, "IMAGE", dir, "DIR").Replace(f.Message))
	}
	return lines
}

func TestMain(m *testing.M) {
	if testbed.RunLockHolder() {
		return
	}
	os.Exit(m.Run())
}

// holdLock has a child process lock path for writing until the test ends,
// and returns its pid.
func holdLock(t *testing.T, path string) int {
	t.Helper()
	return testbed.HoldLocks(t, "w:"+path)
}

func TestCheckInUse(t *testing.T) {
	dir, image := images(t)
	cowFile := filepath.Join(dir, "g.cow")
	if err := cow.Create(cowFile, image); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(cowFile, 0o666); err != nil {
		t.Fatal(err)
	}
	pid := holdLock(t, cowFile)
	kernel := fakeKernelFile(t, dir)
	conf := "[Guest]\nKernel=" + kernel + "\nRootImage=" + image + "\nCow=" + cowFile + "\nUser=uml-ok\n"
	inUse := "problem: COW file DIR/g.cow is in use by process PID"
	for _, tt := range []struct {
		name, conf, unit string
		want             []string
	}{
		{"by the guest's own kernel", conf, "uml@g.service", []string{boots, "note: COW file DIR/g.cow is in use by the guest's own kernel (process PID): uml@g.service is running"}},
		{"by another guest", conf, "uml@web.service", []string{boots, inUse + " of uml@web.service; stop it first"}},
		{"by another process", conf, "", []string{boots, inUse + " (another UML kernel?); stop it first"}},
		// A write lock on a backing file conflicts with reading it.
		{"the root image", "[Guest]\nKernel=" + kernel + "\nRootImage=" + cowFile + "\nCow=" + dir + "/new.cow\nUser=uml-ok\n", "uml@web.service", []string{
			boots,
			"problem: RootImage=DIR/g.cow is in use by process PID of uml@web.service; stop it first",
			"note: the COW file DIR/new.cow does not exist yet; the guest's first start creates it on RootImage=DIR/g.cow",
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := testChecker(t, newFakeAccounts())
			c.unitOf = func(p int) string {
				if p != pid {
					t.Errorf("unit of process %d asked, want %d", p, pid)
				}
				return tt.unit
			}
			got := findingLines(c.Check(t.Context(), parseGuest(t, "g", tt.conf), nil), dir, image)
			for i := range got {
				got[i] = strings.ReplaceAll(got[i], strconv.Itoa(pid), "PID")
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("findings (-want +got):\n%s", diff)
			}
		})
	}
}

func TestUnitOfCgroup(t *testing.T) {
	for _, tt := range []struct{ text, want string }{
		{"0::/system.slice/system-uml.slice/uml@dns.service\n", "uml@dns.service"},
		{"0::/system.slice/system-uml.slice/uml@dns.service/kernel\n", "uml@dns.service"},
		{"0::/user.slice/user-0.slice/session-3.scope\n", "session-3.scope"},
		{"12:pids:/system.slice/ssh.service\n1:name=systemd:/system.slice/uml@web.service\n0::/\n", "uml@web.service"},
		{"0::/\n", ""},
		{"", ""},
	} {
		if got := unitOfCgroup(tt.text); got != tt.want {
			t.Errorf("unitOfCgroup(%q) = %q, want %q", tt.text, got, tt.want)
		}
	}
}

// TestCheckBridge checks Bridge= against interfaces of a throwaway network
// namespace: the test's goroutine stays on its OS thread, in the
// namespace, until the end.
func TestCheckBridge(t *testing.T) {
	testbed.RequireRoot(t)
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			t.Errorf("returning to the original network namespace: %v", err)
			return // the thread ends with the goroutine
		}
		runtime.UnlockOSThread()
	}()
	defer ns.Close()
	if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}); err != nil {
		t.Fatal(err)
	}
	dir, image := images(t)
	kernel := fakeKernelFile(t, dir)
	for _, tt := range []struct {
		bridge string
		want   []string
	}{
		{"br0", []string{boots}},
		{"lo", []string{"problem: /etc/uml/g.conf: Bridge=lo: lo is not a bridge but a plain network interface; name a bridge in Bridge= (see uml.conf(5))", boots}},
		{"br1", []string{"problem: /etc/uml/g.conf: Bridge=br1: the bridge br1 does not exist; create it, for example with systemd-networkd, or fix Bridge= (see uml.conf(5))", boots}},
	} {
		conf := "[Guest]\nKernel=" + kernel + "\nRootImage=" + image + "\nCow=no\nUser=uml-ok\n[Network]\nAddress=10.0.0.2\nBridge=" + tt.bridge + "\n"
		if err := os.Chmod(image, 0o666); err != nil {
			t.Fatal(err)
		}
		got := findingLines(testChecker(t, newFakeAccounts()).Check(t.Context(), parseGuest(t, "g", conf), nil), dir, image)
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("Bridge=%s: findings (-want +got):\n%s", tt.bridge, diff)
		}
	}
}

// withoutDACOverride makes the test's goroutine, locked to its OS thread,
// obey file permissions as a user other than root does, until the test
// ends: capabilities belong to a thread.
func withoutDACOverride(t *testing.T) {
	testbed.RequireRoot(t)
	runtime.LockOSThread()
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var orig [2]unix.CapUserData
	if err := unix.Capget(&hdr, &orig[0]); err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	caps := orig
	caps[0].Effective &^= 1<<unix.CAP_DAC_OVERRIDE | 1<<unix.CAP_DAC_READ_SEARCH
	if err := unix.Capset(&hdr, &caps[0]); err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unix.Capset(&hdr, &orig[0]); err != nil {
			t.Errorf("restoring the thread's capabilities: %v", err) // the thread ends with the goroutine
			return
		}
		runtime.UnlockOSThread()
	})
}

func TestCheckNotRoot(t *testing.T) {
	dir, image := images(t)
	private := filepath.Join(dir, "private.cow")
	if err := cow.Create(private, image); err != nil {
		t.Fatal(err)
	}
	// The guest's, as the supervisor makes it: only the guest may read it.
	if err := os.Chown(private, 2000, 2000); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(private, 0o600); err != nil {
		t.Fatal(err)
	}
	g := parseGuest(t, "g", "[Guest]\nKernel="+fakeKernelFile(t, dir)+"\nRootImage="+image+"\nCow="+private+"\nUser=uml-ok\n")
	withoutDACOverride(t)
	for _, tt := range []struct {
		root bool
		want []string
	}{
		{false, []string{boots, "skipped: Cow=DIR/private.cow: permission denied; not checked further, because umlctl check does not run as root"}},
		// Root that may not read a file has a problem.
		{true, []string{boots, "problem: Cow=DIR/private.cow: permission denied"}},
	} {
		c := testChecker(t, newFakeAccounts())
		c.root = tt.root
		got := findingLines(c.Check(t.Context(), g, nil), dir, image)
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("as root %v: findings (-want +got):\n%s", tt.root, diff)
		}
	}
}
