package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"umlsd/guestimage"
	"umlsd/internal/testbed"
	"umlsd/internal/umltest"
	"umlsd/mconsole"
)

// benchStartup marks the moment the guest's userspace is up.
const benchStartup = "echo UMLSD-BENCH-UP\n"

// BenchmarkSupervisor measures what the supervisor adds to a guest's start
// and stop, against the same kernel and image run bare on the host, for
// umlsd's kernel and for Debian's:
//
//   - start-ms: systemctl start to active (systemd's timestamps) for a
//     Ready=kernel guest; start-overhead-ms: that minus the bare kernel's
//     time from exec to its management console notification;
//   - rss-kB: the supervisor's resident memory while the guest runs;
//   - stop-overhead-ms: systemctl stop (less the cost of running a command
//     in the machine) for a guest that shuts down on Ctrl-Alt-Del, minus
//     the bare kernel's time from cad to exit.
func BenchmarkSupervisor(b *testing.B) {
	testbed.RequireRoot(b)
	testbed.RequireCommands(b, "systemd-nspawn", "make", "go", "linux.uml", "mke2fs", "busybox", "setarch")
	img := filepath.Join(b.TempDir(), "bench.img")
	if err := guestimage.Build(b.Context(), img, guestimage.Spec{Size: 32 << 20, Startup: benchStartup}); err != nil {
		b.Fatal(err)
	}
	data, err := os.ReadFile(img)
	if err != nil {
		b.Fatal(err)
	}
	conf := "[Guest]\nRootImage=" + imageDir + "/bench.img\nMemory=64M\n"
	m := testbed.Boot(b.Context(), b, testbed.Options{Install: true, Files: map[string][]byte{
		imageDir + "/bench.img":   data,
		"/etc/uml/bench.conf":     []byte(conf),
		"/etc/uml/bench-deb.conf": []byte(conf + debianKernel),
	}})
	for _, k := range []struct{ name, unit, bare string }{
		{"umlsd", "uml@bench.service", testbed.ProjectKernel(b)},
		{"debian", "uml@bench-deb.service", "/usr/bin/linux.uml"},
	} {
		b.Run("kernel="+k.name, func(b *testing.B) { benchSupervisor(b, m, k.unit, k.bare, img) })
	}
}

func benchSupervisor(b *testing.B, m *testbed.Machine, unit, kernel, img string) {
	usec := func(prop string) time.Duration {
		v, err := strconv.ParseInt(show(b, m, unit, prop), 10, 64)
		if err != nil {
			b.Fatal(err)
		}
		return time.Duration(v) * time.Microsecond
	}
	var start, stop, bareBoot, bareStop time.Duration
	var rss int
	for b.Loop() {
		boot, shutdown := bareKernel(b, kernel, img)
		bareBoot += boot
		bareStop += shutdown

		m.MustRun(b, "systemctl", "start", unit)
		start += usec("ActiveEnterTimestampMonotonic") - usec("InactiveExitTimestampMonotonic")
		waitJournal(b, m, unit, "UMLSD-BENCH-UP")
		status := m.MustRun(b, "cat", "/proc/"+show(b, m, unit, "MainPID")+"/status")
		for _, line := range strings.Split(status, "\n") {
			if f := strings.Fields(line); len(f) == 3 && f[0] == "VmRSS:" {
				kb, _ := strconv.Atoi(f[1])
				rss = max(rss, kb)
			}
		}
		// A stopped instance is unloaded, its timestamps with it: time
		// systemctl stop itself, less what running a command in the
		// machine costs.
		t0 := time.Now()
		m.MustRun(b, "true")
		t1 := time.Now()
		m.MustRun(b, "systemctl", "stop", unit)
		stop += time.Since(t1) - t1.Sub(t0)
		m.MustRun(b, "journalctl", "--rotate", "--vacuum-files=1")
	}
	n := time.Duration(b.N)
	ms := func(d time.Duration) float64 { return float64(d/n) / float64(time.Millisecond) }
	b.ReportMetric(ms(start), "start-ms")
	b.ReportMetric(ms(bareBoot), "bare-boot-ms")
	b.ReportMetric(ms(start-bareBoot), "start-overhead-ms")
	b.ReportMetric(float64(rss), "rss-kB")
	b.ReportMetric(ms(stop), "stop-ms")
	b.ReportMetric(ms(bareStop), "bare-shutdown-ms")
	b.ReportMetric(ms(stop-bareStop), "stop-overhead-ms")
}

// bareKernel boots the image with the kernel alone, as root on the host
// (without address randomisation, as the supervisor runs it), and returns
// the time from exec to the management console notification and, once the
// guest's userspace is up, from cad to the kernel's exit.
func bareKernel(b *testing.B, kernel, img string) (boot, shutdown time.Duration) {
	b.Helper()
	b.StopTimer()
	defer b.StartTimer()
	dir, err := os.MkdirTemp("", "umlsd-bench-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	notes, err := mconsole.ListenNotify(filepath.Join(dir, "notify"))
	if err != nil {
		b.Fatal(err)
	}
	defer notes.Close()
	t0 := time.Now()
	k := umltest.Start(b, umltest.BareCommand(kernel, img, dir, "64M"))
	defer k.Kill()
	n, err := notes.Receive(b.Context())
	if err != nil || n.Type != mconsole.NotifySocket {
		b.Fatalf("bare kernel: no management console notification: %v %v", n, err)
	}
	boot = time.Since(t0)
	ctx, cancel := context.WithTimeout(b.Context(), 30*time.Second)
	defer cancel()
	if err := k.WaitConsole(ctx, "UMLSD-BENCH-UP"); err != nil {
		b.Fatalf("bare kernel: the guest did not come up: %v", err)
	}
	c, err := mconsole.Dial(n.Data)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	t1 := time.Now()
	if _, err := c.Command(b.Context(), "cad"); err != nil {
		b.Fatal(err)
	}
	if _, err := k.Wait(b.Context()); err != nil {
		b.Fatalf("bare kernel after cad: %v", err)
	}
	return boot, time.Since(t1)
}
