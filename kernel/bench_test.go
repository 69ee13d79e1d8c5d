package kernel_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"umlsd/internal/testbed"
	"umlsd/internal/umltest"
	"umlsd/mconsole"
)

// benchKernel is a kernel the benchmarks boot.
type benchKernel struct{ name, path string }

// benchKernels are umlsd's kernel and Debian's, booted side by side.
func benchKernels(b *testing.B) []benchKernel {
	testbed.RequireCommands(b, "linux.uml", "busybox", "mke2fs", "setarch")
	debian, err := exec.LookPath("linux.uml")
	if err != nil {
		b.Fatal(err)
	}
	return []benchKernel{{"umlsd", testbed.ProjectKernel(b)}, {"debian", debian}}
}

// quickInit says one line and powers off at once.
const quickInit = "#!/bin/busybox sh\necho UMLSD-INIT\n/bin/busybox poweroff -f\n"

// bootTimes boots kernel on img once and says how long it took from exec
// to the management console's notification, to init's first line, and to
// the kernel's exit.
func bootTimes(b *testing.B, kernel, img string) (notify, init, exit time.Duration) {
	b.Helper()
	dir := b.TempDir()
	notes, err := mconsole.ListenNotify(filepath.Join(dir, "notify"))
	if err != nil {
		b.Fatal(err)
	}
	defer notes.Close()
	t0 := time.Now()
	k := umltest.Start(b, umltest.BareCommand(kernel, img, dir, "48M"))
	if n, err := notes.Receive(b.Context()); err != nil || n.Type != mconsole.NotifySocket {
		b.Fatalf("%s: no management console notification: %v %v", kernel, n, err)
	}
	notify = time.Since(t0)
	ctx, cancel := context.WithTimeout(b.Context(), time.Minute)
	defer cancel()
	if _, err := k.Wait(ctx); err != nil {
		b.Fatalf("%s: the guest did not power off: %v", kernel, err)
	}
	exit = time.Since(t0)
	at, ok := k.Console.Arrived("UMLSD-INIT")
	if !ok {
		b.Fatalf("%s: init said nothing:\n%s", kernel, k.Console.String())
	}
	return notify, at.Sub(t0), exit
}

// BenchmarkBoot boots a 32 MiB busybox image whose init prints a line and
// powers off at once (mem=48M, no address randomisation, as under the
// supervisor) with umlsd's kernel and Debian's in turn, and reports for
// each the time from exec to the management console's notification
// (notify), to init's first line (init) and to the kernel's exit (exit).
func BenchmarkBoot(b *testing.B) {
	kernels := benchKernels(b)
	img := filepath.Join(b.TempDir(), "quick.img")
	busyboxImage(b, img, quickInit, "lazy_itable_init=0")
	sums := make([][3]time.Duration, len(kernels))
	for b.Loop() {
		for i, k := range kernels {
			n, in, e := bootTimes(b, k.path, img)
			sums[i][0] += n
			sums[i][1] += in
			sums[i][2] += e
		}
	}
	for i, k := range kernels {
		for j, what := range []string{"notify", "init", "exit"} {
			b.ReportMetric(float64(sums[i][j])/float64(b.N)/float64(time.Millisecond), k.name+"-"+what+"-ms")
		}
	}
}

// idleInit mounts /proc, says it is up, and idles.
const idleInit = "#!/bin/busybox sh\n/bin/busybox mount -t proc proc /proc\necho UMLSD-IDLE\nexec /bin/busybox sleep 3600\n"

// BenchmarkIdleMemory boots an idle busybox guest with mem=64M on each
// kernel in turn and reports the host memory of all its processes, their
// proportional set size (Pss) summed: the processes share the guest's
// memory file, which Pss counts once among them.
func BenchmarkIdleMemory(b *testing.B) {
	kernels := benchKernels(b)
	img := filepath.Join(b.TempDir(), "idle.img")
	busyboxImage(b, img, idleInit, "lazy_itable_init=0")
	sums := make([]int, len(kernels))
	for b.Loop() {
		for i, k := range kernels {
			dir := b.TempDir()
			kern := umltest.Start(b, umltest.BareCommand(k.path, img, dir, "64M"))
			ctx, cancel := context.WithTimeout(b.Context(), time.Minute)
			if err := kern.WaitConsole(ctx, "UMLSD-IDLE"); err != nil {
				cancel()
				b.Fatal(err)
			}
			cancel()
			time.Sleep(2 * time.Second) // settled
			sums[i] += groupPss(b, kern.Pid())
			if err := kern.Kill(); err != nil {
				b.Fatal(err)
			}
		}
	}
	for i, k := range kernels {
		b.ReportMetric(float64(sums[i])/float64(b.N)/1024, k.name+"-pss-MiB")
	}
}

// groupPss sums the Pss, in KiB, of every process in process group pgid.
func groupPss(b *testing.B, pgid int) int {
	b.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		b.Fatal(err)
	}
	total := 0
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// The fields after the command's closing parenthesis: state, ppid, pgrp.
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(f) < 3 || f[2] != strconv.Itoa(pgid) {
			continue
		}
		total += pss(b, pid)
	}
	return total
}

// pss is a process's Pss in KiB.
func pss(b *testing.B, pid int) int {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0 // it exited
	}
	defer f.Close()
	for s := bufio.NewScanner(f); s.Scan(); {
		if v, ok := strings.CutPrefix(s.Text(), "Pss:"); ok {
			kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				b.Fatalf("/proc/%d/smaps_rollup: %q", pid, s.Text())
			}
			return kb
		}
	}
	return 0
}
