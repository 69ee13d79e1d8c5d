// Package kernel_test checks umlsd's guest kernel as `make kernel` builds
// it (build/kernel/linux): its configuration against kernel/umlsd.config
// and what must never come back, and what its patches fix, on real boots.
// The directory holds the kernel's configuration fragment, patches and
// build script; it has no Go code of its own.
package kernel_test

import (
	"bufio"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"umlsd/internal/testbed"
)

// required is what umlsd's kernel must have and must not have, whatever
// kernel/umlsd.config says: a change to the fragment cannot quietly bring
// back modules or hostfs, or lose what umlsd or a systemd guest needs.
var required = map[string]string{
	// Out: what would let the guest reach past its kernel, or slow it.
	"MODULES":            "n",
	"HOSTFS":             "n",
	"BTRFS_FS":           "n",
	"RAID6_PQ":           "n",
	"XFS_FS":             "n",
	"JFS_FS":             "n",
	"REISERFS_FS":        "n",
	"UML_NET_SLIRP":      "n",
	"UML_NET_DAEMON":     "n",
	"UML_NET_MCAST":      "n",
	"UML_NET_PCAP":       "n",
	"UML_NET_VDE":        "n",
	"UML_NET_TUNTAP":     "n",
	"XTERM_CHAN":         "n",
	"PORT_CHAN":          "n",
	"UML_SOUND":          "n",
	"SOUND":              "n",
	"LEGACY_PTYS":        "n",
	"SSL":                "n",
	"VT":                 "n",
	"SYSFS_DEPRECATED":   "n",
	"RAID6_PQ_BENCHMARK": "n",
	"VMAP_STACK":         "n", // boots hang (umlsd.config)
	// In: what umlsd uses.
	"BLK_DEV_UBD":    "y",
	"UML_NET_VECTOR": "y",
	"MCONSOLE":       "y",
	"MAGIC_SYSRQ":    "y",
	"NULL_CHAN":      "y",
	"PROC_FS":        "y",
	"EXT4_FS":        "y",
	"TMPFS":          "y",
	"DEVTMPFS":       "y",
	"UML_RANDOM":     "y",
	// In: what a Debian guest running systemd needs.
	"CGROUPS":        "y",
	"INOTIFY_USER":   "y",
	"SIGNALFD":       "y",
	"TIMERFD":        "y",
	"EPOLL":          "y",
	"FHANDLE":        "y",
	"AUTOFS_FS":      "y",
	"UNIX":           "y",
	"NET_NS":         "y",
	"USER_NS":        "y",
	"PID_NS":         "y",
	"SECCOMP":        "y",
	"SECCOMP_FILTER": "y",
	"KCMP":           "y",
	"CGROUP_BPF":     "y",
	"IPV6":           "y",
	// In: a firewall of the guest's own.
	"NF_TABLES":      "y",
	"NFT_COMPAT":     "y",
	"IP_NF_IPTABLES": "y",
}

// fragmentLine is an option line of a configuration fragment.
var fragmentLine = regexp.MustCompile(`^(?:CONFIG_([A-Za-z0-9_]+)=(.*)|# CONFIG_([A-Za-z0-9_]+) is not set)$`)

// TestProjectKernelConfiguration checks the configuration umlsd's built
// kernel prints (--showconfig) against the options above and against every
// option of kernel/umlsd.config.
func TestProjectKernelConfiguration(t *testing.T) {
	path := testbed.ProjectKernel(t)
	out, err := exec.Command(path, "--showconfig").Output()
	if err != nil {
		t.Fatalf("%s --showconfig: %v", path, err)
	}
	built := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		if m := fragmentLine.FindStringSubmatch(l); m != nil && m[1] != "" {
			built[m[1]] = m[2]
		}
	}
	value := func(name string) string {
		if v, ok := built[name]; ok {
			return v
		}
		return "n"
	}
	for name, want := range required {
		if got := value(name); got != want {
			t.Errorf("CONFIG_%s=%s in %s, want %s", name, got, path, want)
		}
	}
	fragment := "umlsd.config"
	f, err := os.Open(fragment)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	for s := bufio.NewScanner(f); s.Scan(); {
		m := fragmentLine.FindStringSubmatch(s.Text())
		if m == nil {
			continue
		}
		n++
		name, want := m[1], m[2]
		if name == "" {
			name, want = m[3], "n"
		}
		if got := value(name); got != want {
			t.Errorf("CONFIG_%s=%s in %s, but %s asks for %s", name, got, path, fragment, want)
		}
	}
	if n < len(required) {
		t.Errorf("%s has %d options; it is not umlsd's fragment", fragment, n)
	}
}
