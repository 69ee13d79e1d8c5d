package netprep

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// writeSysctls makes procSys hold br_netfilter's sysctls with values, in
// the order of bridgeSysctls; nil values: the module is not loaded.
func writeSysctls(t *testing.T, procSys string, values []string) {
	t.Helper()
	for i, s := range bridgeSysctls[:len(values)] {
		path := filepath.Join(procSys, s)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(values[i]+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestReadBridgeFilter(t *testing.T) {
	for _, tc := range []struct {
		name    string
		values  []string
		want    BridgeFilter
		wantErr string
	}{
		{"not loaded", nil, BridgeFilter{}, ""},
		{"on", []string{"1", "1"}, BridgeFilter{Loaded: true}, ""},
		{"off", []string{"0", "1"}, BridgeFilter{Loaded: true, Off: []string{"net.bridge.bridge-nf-call-iptables"}}, ""},
		{"both off", []string{"0", "0"}, BridgeFilter{Loaded: true, Off: []string{"net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables"}}, ""},
		{"one missing", []string{"1"}, BridgeFilter{}, "reading "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeSysctls(t, dir, tc.values)
			got, err := ReadBridgeFilter(dir)
			if tc.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one starting %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("state (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEnableBridgeFilter(t *testing.T) {
	for _, tc := range []struct {
		name     string
		values   []string // the sysctls' values; nil: the module is not loaded
		modprobe string   // a shell command standing in for modprobe
		want     []string
		wantErr  string
	}{
		{"already on", []string{"1", "1"}, "false", nil, ""},
		{"off", []string{"0", "1"}, "false", []string{"set net.bridge.bridge-nf-call-iptables=1"}, ""},
		{"module loaded", nil, `mkdir -p "$DIR/net/bridge"; echo 0 >"$DIR/net/bridge/bridge-nf-call-iptables"; echo 0 >"$DIR/net/bridge/bridge-nf-call-ip6tables"`,
			[]string{"loaded the kernel module br_netfilter", "set net.bridge.bridge-nf-call-iptables=1", "set net.bridge.bridge-nf-call-ip6tables=1"}, ""},
		{"module missing", nil, "echo 'modprobe: FATAL: Module br_netfilter not found' >&2; exit 1", nil,
			"the kernel module br_netfilter, which the guest's firewall needs, is not loaded, and sh -c "},
		{"module loads nothing", nil, "true", nil, "modprobe br_netfilter succeeded, but "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeSysctls(t, dir, tc.values)
			t.Setenv("DIR", dir)
			got, err := EnableBridgeFilter(t.Context(), dir, []string{"sh", "-c", tc.modprobe, "modprobe"})
			if tc.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one starting %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("changes (-want +got):\n%s", diff)
			}
			for _, s := range bridgeSysctls {
				if v, _ := os.ReadFile(filepath.Join(dir, s)); string(v) != "1\n" && strings.TrimSpace(string(v)) != "1" {
					t.Errorf("%s is %q after EnableBridgeFilter", s, v)
				}
			}
		})
	}
}
