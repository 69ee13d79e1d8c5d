package cli

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestHostKernel(t *testing.T) {
	env, f := testEnv(t)
	ask := hostKernel(env.RuntimeDir)
	got, err := ask(t.Context(), "g")
	if err != nil {
		t.Fatal(err)
	}
	want := kernelInfo{PID: 1, Version: "Linux 6.1.176 #1 SMP", Uptime: 12270.5, Boots: 2, Ready: true}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("kernel of a running guest (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"version", "proc uptime"}, f.commands); diff != "" {
		t.Errorf("mconsole commands sent (-want +got):\n%s", diff)
	}
	if _, err := ask(t.Context(), "idle"); !errors.Is(err, errNotRunning) {
		t.Errorf("kernel of a guest without a supervisor: %v, want errNotRunning", err)
	}
}

func TestParseUptime(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want float64
		ok   bool
	}{
		{"12270.50 100.00\n", 12270.5, true},
		{"0.01 0.00", 0.01, true},
		{"", 0, false},
		{"inf 0", 0, false},
		{"NaN 0", 0, false},
		{"-5 0", 0, false},
		{"1e300 0", 0, false},
		{"\x1b[2K 0", 0, false},
	} {
		got, err := parseUptime(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseUptime(%q) = %v, %v; want %v, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}
