package netprep

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// bridgeSysctls make the bridge pass the packets it forwards through
// iptables and ip6tables (br_netfilter). Without them the firewall never
// sees what a guest sends to another port of its bridge.
var bridgeSysctls = []string{"net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables"}

// BridgeFilter is the state of br_netfilter in a network namespace.
type BridgeFilter struct {
	// Loaded says that the module is loaded (or built in): its sysctls
	// exist.
	Loaded bool
	// Off lists its sysctls that are not 1, as sysctl(8) names them.
	Off []string
}

// ReadBridgeFilter reads the state of br_netfilter in the caller's network
// namespace, changing nothing: what EnableBridgeFilter would change. procSys
// is /proc/sys (tests pass another directory).
func ReadBridgeFilter(procSys string) (BridgeFilter, error) {
	var bf BridgeFilter
	if _, err := os.Stat(filepath.Join(procSys, bridgeSysctls[0])); errors.Is(err, fs.ErrNotExist) {
		return bf, nil
	}
	bf.Loaded = true
	for _, s := range bridgeSysctls {
		path := filepath.Join(procSys, s)
		v, err := os.ReadFile(path)
		if err != nil {
			return bf, fmt.Errorf("reading %s: %w; the guest's firewall needs br_netfilter", path, err)
		}
		if string(bytes.TrimSpace(v)) != "1" {
			bf.Off = append(bf.Off, strings.ReplaceAll(s, "/", "."))
		}
	}
	return bf, nil
}

// EnableBridgeFilter makes sure bridged packets pass iptables and ip6tables
// in the caller's network namespace: it loads br_netfilter if its sysctls
// are missing and sets them to 1. It returns what it changed, for the log.
// procSys is /proc/sys (tests pass another directory), modprobe the command
// that loads a module.
func EnableBridgeFilter(ctx context.Context, procSys string, modprobe []string) (changed []string, err error) {
	bf, err := ReadBridgeFilter(procSys)
	if err != nil {
		return nil, err
	}
	if !bf.Loaded {
		cmd := exec.CommandContext(ctx, modprobe[0], append(modprobe[1:], "br_netfilter")...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("the kernel module br_netfilter, which the guest's firewall needs, is not loaded, and %s failed (%v: %s); load it at boot with echo br_netfilter >/etc/modules-load.d/br_netfilter.conf",
				strings.Join(cmd.Args, " "), err, bytes.TrimSpace(out))
		}
		changed = append(changed, "loaded the kernel module br_netfilter")
		if bf, err = ReadBridgeFilter(procSys); err != nil {
			return changed, err
		}
		if !bf.Loaded {
			return changed, fmt.Errorf("modprobe br_netfilter succeeded, but %s does not exist; see the kernel log (dmesg) for why the module did not load", filepath.Join(procSys, bridgeSysctls[0]))
		}
	}
	for _, name := range bf.Off {
		path := filepath.Join(procSys, strings.ReplaceAll(name, ".", "/"))
		if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil {
			return changed, fmt.Errorf("setting %s to 1, which the guest's firewall needs: %w; set it with sysctl -w %s=1", path, err, name)
		}
		changed = append(changed, "set "+name+"=1")
	}
	return changed, nil
}
