package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"umlsd/guestimage"
	"umlsd/internal/testbed"
)

// The guest images of these tests live here in the machine: not under /tmp,
// which PrivateTmp= hides from the unit.
const imageDir = "/var/lib/uml/images"

// guestStartup is what every test guest does at boot. Words on the kernel
// command line (KernelArguments=umlsd.WORD) choose what else it does, so
// that one image serves every test.
const guestStartup = `args=" $(cat /proc/cmdline) "
has() { case "$args" in *" umlsd.$1 "*) return 0;; esac; return 1; }
echo "UMLSD-BOOTED"
echo "UMLSD-MEMTOTAL: $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) kB"
[ -f /var/umlsd-shutdown ] && echo "UMLSD-SHUTDOWN-MARKER: $(cat /var/umlsd-shutdown)"
[ -f /var/umlsd-written ] && echo "UMLSD-WRITTEN-MARKER: $(cat /var/umlsd-written)"
echo "written at boot, not synced" > /var/umlsd-written
if has hostfs; then
	if mount -t hostfs none /mnt; then
		echo "UMLSD-HOSTFS-LS: $(ls /mnt | tr '\n' ' ')"
		cat /mnt/etc/umlsd-secret 2>&1 | sed 's/^/UMLSD-HOSTFS-READ: /'
		umount /mnt
	else
		echo "UMLSD-HOSTFS: mount failed"
	fi
fi
has slow && sleep 3
# An interactive shell on the console, which it takes as its controlling
# terminal (cttyhack; a session of its own), so that Ctrl-C works in it.
has shell && start-stop-daemon -S -b -p /run/umlsd-shell.pid -m -x /usr/bin/setsid -- cttyhack sh -i
has panic && echo c > /proc/sysrq-trigger
echo "UMLSD-READY"
has notify && echo READY=1 > /proc/mconsole
has poweroff && (sleep 1; poweroff) &
has exitcode && (sleep 1; echo 7 > /proc/exitcode; poweroff) &
true
`

// readyConsole makes a guest ready once its userspace runs: guests that are
// stopped as soon as they are ready must have an init that handles cad.
const readyConsole = "Ready=console:^UMLSD-READY$\n"

// projectKernel is umlsd's own kernel, the default Kernel=, where make
// install puts it in the machine; debianKernel boots Debian's instead.
const (
	projectKernel = "/usr/local/libexec/umlsd/linux"
	debianKernel  = "Kernel=/usr/bin/linux.uml\n"
)

// secret is a host file no guest may read.
const secret = "host secret 4f1c"

// bootWithGuests boots a machine with umlsd installed, the test guest
// images (guest.img shuts down on Ctrl-Alt-Del, stubborn.img ignores it)
// and the given configurations.
func bootWithGuests(t *testing.T, configs map[string]string) *testbed.Machine {
	t.Helper()
	testbed.RequireRoot(t)
	testbed.RequireCommands(t, "systemd-nspawn", "make", "go", "linux.uml", "mke2fs", "busybox")
	files := map[string][]byte{"/etc/umlsd-secret": []byte(secret + "\n")}
	for name, cad := range map[string]guestimage.CtrlAltDel{"guest.img": guestimage.Poweroff, "stubborn.img": guestimage.Ignore} {
		path := filepath.Join(t.TempDir(), name)
		spec := guestimage.Spec{
			Size:       32 << 20,
			Hostname:   "umlsd-test",
			Startup:    guestStartup,
			Shutdown:   `echo "clean shutdown" > /var/umlsd-shutdown`,
			CtrlAltDel: cad,
		}
		if err := guestimage.Build(t.Context(), path, spec); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		files[imageDir+"/"+name] = data
	}
	for name, conf := range configs {
		files["/etc/uml/"+name+".conf"] = []byte(conf)
	}
	return testbed.Boot(t.Context(), t, testbed.Options{Install: true, Files: files})
}

// guestConf is a test guest's configuration: its image, more [Guest]
// settings, and the umlsd.WORDs for guestStartup.
func guestConf(image, extra, words string) string {
	return fmt.Sprintf("[Guest]\nRootImage=%s/%s\nMemory=64M\nKernelArguments=%s\n%s", imageDir, image, words, extra)
}

// show is a unit property.
func show(t testing.TB, m *testbed.Machine, unit, prop string) string {
	t.Helper()
	return strings.TrimSpace(m.MustRun(t, "systemctl", "show", "-P", prop, unit))
}

// journal is the unit's journal, messages only.
func journal(t testing.TB, m *testbed.Machine, args ...string) string {
	t.Helper()
	out, _, _ := m.Run(t.Context(), append([]string{"journalctl", "--no-pager", "-o", "cat"}, args...)...)
	return out
}

// waitJournal waits until the unit's journal holds want, and fails the
// test after 30 s.
func waitJournal(t testing.TB, m *testbed.Machine, unit, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := journal(t, m, "-u", unit)
		if strings.Contains(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the journal of %s lacks %q after 30 s:\n%s", unit, want, got)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// timedStart starts a unit and says how long systemctl start took.
func timedStart(t *testing.T, m *testbed.Machine, unit string) time.Duration {
	t.Helper()
	start := time.Now()
	if _, stderr, err := m.Run(t.Context(), "systemctl", "start", unit); err != nil {
		t.Fatalf("systemctl start %s: %v\n%s\nstatus:\n%s\njournal:\n%s", unit, err, stderr, status(t, m, unit), journal(t, m, "-u", unit))
	}
	return time.Since(start)
}

func status(t *testing.T, m *testbed.Machine, unit string) string {
	out, _, _ := m.Run(t.Context(), "systemctl", "status", "--no-pager", "-n", "30", unit)
	return out
}

// kernelPID is the pid of the guest's kernel: the supervisor's child.
func kernelPID(t *testing.T, m *testbed.Machine, unit string) string {
	t.Helper()
	main := show(t, m, unit, "MainPID")
	pids := strings.Fields(m.MustRun(t, "pgrep", "-P", main))
	if len(pids) != 1 {
		t.Fatalf("supervisor %s of %s has children %q, want one kernel", main, unit, pids)
	}
	return pids[0]
}

// requireNothingLeft checks that nothing of guest name is left on the host:
// no process of its account, no runtime directory, no mount of it.
func requireNothingLeft(t *testing.T, m *testbed.Machine, name string) {
	t.Helper()
	if out, _, err := m.Run(t.Context(), "pgrep", "-a", "-u", "uml-"+name); err == nil {
		t.Errorf("processes of uml-%s are left:\n%s", name, out)
	}
	if out, _, err := m.Run(t.Context(), "ls", "-la", "/run/uml/"+name); err == nil {
		t.Errorf("/run/uml/%s is left:\n%s", name, out)
	}
	if mounts := m.MustRun(t, "cat", "/proc/self/mountinfo"); strings.Contains(mounts, "/run/uml/") {
		t.Errorf("mounts of /run/uml are left:\n%s", mounts)
	}
}

// TestGuestLifecycle: start returns when the guest is ready, for each kind
// of readiness; the kernel runs unprivileged in its jail, with its
// personality locked; the console is in the journal; stop shuts the guest
// down cleanly and leaves nothing. Guest c boots Debian's kernel, which has
// hostfs, and stays supported; the others umlsd's own (the default).
func TestGuestLifecycle(t *testing.T) {
	m := bootWithGuests(t, map[string]string{
		"k": guestConf("guest.img", "ReadyTimeout=8s\n", "umlsd.slow"),
		"c": guestConf("guest.img", readyConsole+debianKernel, "umlsd.slow umlsd.hostfs"),
		"n": guestConf("guest.img", "Ready=notify\n[Service]\nWatchdogSec=2s\n", "umlsd.slow umlsd.notify"),
	})
	// Every guest's userspace sleeps 3 s before it says it is ready; the
	// kernel answers on its management console long before.
	const slow = 3 * time.Second
	if d := timedStart(t, m, "uml@k.service"); d >= slow {
		t.Errorf("start with Ready=kernel took %v: it waited for userspace", d)
	}
	for _, unit := range []string{"uml@c.service", "uml@n.service"} {
		if d := timedStart(t, m, unit); d < slow {
			t.Errorf("start of %s returned after %v, before the guest was ready", unit, d)
		}
		if got := journal(t, m, "-u", unit); !strings.Contains(got, "UMLSD-READY") {
			t.Errorf("%s is active, but its guest has not said UMLSD-READY:\n%s", unit, got)
		}
	}
	for _, unit := range []string{"uml@k.service", "uml@c.service", "uml@n.service"} {
		if got := show(t, m, unit, "ActiveState"); got != "active" {
			t.Errorf("%s is %s", unit, got)
		}
		if got := show(t, m, unit, "StatusText"); !strings.HasPrefix(got, "running: ") {
			t.Errorf("%s status %q, want running: and the kernel version", unit, got)
		}
	}

	t.Run("watchdog fed while the kernel answers", func(t *testing.T) {
		first := show(t, m, "uml@n.service", "WatchdogTimestampMonotonic")
		time.Sleep(3 * time.Second) // longer than WatchdogSec=2s
		if got := show(t, m, "uml@n.service", "ActiveState") + "/" + show(t, m, "uml@n.service", "NRestarts"); got != "active/0" {
			t.Errorf("with WatchdogSec=2s the guest is %s (state/restarts)", got)
		}
		if last := show(t, m, "uml@n.service", "WatchdogTimestampMonotonic"); last == first || last == "0" {
			t.Errorf("no watchdog ping in 3 s: WatchdogTimestampMonotonic %s, then %s", first, last)
		}
	})

	t.Run("console in the journal", func(t *testing.T) {
		waitJournal(t, m, "uml@k.service", "UMLSD-BOOTED")
		if got := journal(t, m, "-u", "uml@k.service"); !strings.Contains(got, "Linux version") {
			t.Errorf("journalctl -u uml@k lacks the guest's console:\n%s", got)
		}
		if got := journal(t, m, "UML_GUEST=k", "SYSLOG_IDENTIFIER=uml@k"); !strings.Contains(got, "UMLSD-BOOTED") {
			t.Errorf("journalctl UML_GUEST=k lacks the console:\n%s", got)
		}
	})

	t.Run("unprivileged in a jail", func(t *testing.T) {
		pid := kernelPID(t, m, "uml@k.service")
		uid := strings.TrimSpace(m.MustRun(t, "id", "-u", "uml-k"))
		st := m.MustRun(t, "cat", "/proc/"+pid+"/status")
		for _, want := range []string{
			"Uid:\t" + uid + "\t" + uid + "\t" + uid + "\t" + uid + "\n",
			"Groups:\t\n",
			"CapEff:\t0000000000000000\n",
			"CapPrm:\t0000000000000000\n",
			"CapBnd:\t0000000000000000\n",
			"NoNewPrivs:\t1\n",
		} {
			if !strings.Contains(st, want) && !strings.Contains(st, strings.Replace(want, "\t\n", "\t \n", 1)) {
				t.Errorf("/proc/%s/status lacks %q:\n%s", pid, want, st)
			}
		}
		if root := strings.TrimSpace(m.MustRun(t, "readlink", "/proc/"+pid+"/root")); root != "/run/uml/k/jail" {
			t.Errorf("the kernel's root is %q, want the jail /run/uml/k/jail", root)
		}
		// The kernel's mounts, as it sees them: exactly the jail, each
		// with the access it needs.
		want := map[string]string{
			"/":                               "ro",
			projectKernel:                     "ro",
			"/lib64/ld-linux-x86-64.so.2":     "ro",
			"/lib/x86_64-linux-gnu/libc.so.6": "ro",
			imageDir + "/guest.img":           "ro",
			"/var/lib/uml/k/root.cow":         "rw",
			"/run/uml/k":                      "rw",
			"/run/uml/k/notify.sock":          "rw",
			"/run/uml/k/mem.d":                "rw",
		}
		got := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(m.MustRun(t, "cat", "/proc/"+pid+"/mountinfo")), "\n") {
			f := strings.Fields(line)
			if len(f) < 6 {
				t.Fatalf("mountinfo line %q", line)
			}
			access, _, _ := strings.Cut(f[5], ",")
			got[f[4]] = access
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("the kernel's mounts (-want +got):\n%s", diff)
		}
		// Every process of the kernel runs as the guest's user.
		if out, _, err := m.Run(t.Context(), "pgrep", "-a", "-g", pid, "-u", "root"); err == nil {
			t.Errorf("processes of the kernel's group run as root:\n%s", out)
		}
	})

	t.Run("no address randomisation, whichever kernel", func(t *testing.T) {
		for _, name := range []string{"k", "c", "n"} {
			unit := "uml@" + name + ".service"
			pid := kernelPID(t, m, unit)
			if p := strings.TrimSpace(m.MustRun(t, "cat", "/proc/"+pid+"/personality")); p != "00040000" {
				t.Errorf("the kernel of %s has personality %s, want 00040000 (ADDR_NO_RANDOMIZE)", unit, p)
			}
			// The path as the machine sees it, through the jail's root.
			if exe := strings.TrimSpace(m.MustRun(t, "readlink", "/proc/"+pid+"/exe")); name == "c" && !strings.HasSuffix(exe, "/usr/bin/linux.uml") {
				t.Errorf("%s runs %s, not Debian's kernel", unit, exe)
			}
			if j := journal(t, m, "-u", unit); strings.Contains(j, "exec-shield gap") {
				t.Errorf("the kernel of %s added an exec-shield gap to its memory", unit)
			}
		}
	})

	t.Run("hostfs cannot reach the host", func(t *testing.T) {
		got := journal(t, m, "-u", "uml@c.service")
		if !strings.Contains(got, "UMLSD-HOSTFS") {
			t.Fatalf("the guest did not try hostfs:\n%s", got)
		}
		if strings.Contains(got, secret) {
			t.Errorf("the guest read the host's /etc/umlsd-secret through hostfs:\n%s", got)
		}
		if strings.Contains(got, "UMLSD-HOSTFS-LS:") && strings.Contains(got, " etc ") {
			t.Errorf("hostfs shows a host /etc:\n%s", got)
		}
	})

	t.Run("stop is clean and leaves nothing", func(t *testing.T) {
		for _, name := range []string{"k", "c", "n"} {
			unit := "uml@" + name + ".service"
			m.MustRun(t, "systemctl", "stop", unit)
			if got := journal(t, m, "-u", unit); !strings.Contains(got, "stopped: the guest shut down cleanly") {
				t.Errorf("%s did not shut down cleanly:\n%s", unit, got)
			}
			requireNothingLeft(t, m, name)
		}
		// What the guest wrote while shutting down is in its COW file.
		timedStart(t, m, "uml@k.service")
		waitJournal(t, m, "uml@k.service", "UMLSD-SHUTDOWN-MARKER: clean shutdown")
		m.MustRun(t, "systemctl", "stop", "uml@k.service")
		requireNothingLeft(t, m, "k")
	})

	t.Run("the same memory on every boot of Debian's kernel too", func(t *testing.T) {
		timedStart(t, m, "uml@c.service")
		m.MustRun(t, "systemctl", "stop", "uml@c.service")
		got := consoleValues(t, m, "uml@c.service", "MEMTOTAL")
		if len(got) != 2 || got[0] != got[1] {
			t.Errorf("MemTotal of guest c's two boots: %q, want two equal values", got)
		}
	})
}

// TestStubbornGuest: a guest that ignores Ctrl-Alt-Del is stopped within
// StopTimeout= and a few seconds, with its data synced.
func TestStubbornGuest(t *testing.T) {
	m := bootWithGuests(t, map[string]string{"s": guestConf("stubborn.img", "StopTimeout=2s\n"+readyConsole, "umlsd.none")})
	timedStart(t, m, "uml@s.service")
	start := time.Now()
	m.MustRun(t, "systemctl", "stop", "uml@s.service")
	if d := time.Since(start); d > 2*time.Second+10*time.Second {
		t.Errorf("stopping a guest that ignores cad took %v with StopTimeout=2s", d)
	}
	if got := journal(t, m, "-u", "uml@s.service"); !strings.Contains(got, "its disks were synced and remounted read-only, then the kernel was halted") {
		t.Errorf("the journal does not say how the guest was stopped:\n%s", got)
	}
	requireNothingLeft(t, m, "s")
	timedStart(t, m, "uml@s.service")
	// What the guest wrote before it was halted survived.
	waitJournal(t, m, "uml@s.service", "UMLSD-WRITTEN-MARKER")
}

// TestKilledSupervisor: after kill -9 of the supervisor, systemd kills the
// kernel's processes, ExecStopPost= undoes what the supervisor left, and
// the restart works.
func TestKilledSupervisor(t *testing.T) {
	m := bootWithGuests(t, map[string]string{"g": guestConf("guest.img", readyConsole, "umlsd.none")})
	unit := "uml@g.service"
	timedStart(t, m, unit)
	m.MustRun(t, "systemctl", "kill", "--kill-whom=main", "--signal=SIGKILL", unit)
	deadline := time.Now().Add(60 * time.Second)
	for show(t, m, unit, "NRestarts") != "1" || show(t, m, unit, "ActiveState") != "active" {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not come back after its supervisor was killed:\n%s\n%s", unit, status(t, m, unit), journal(t, m, "-u", unit))
		}
		time.Sleep(200 * time.Millisecond)
	}
	// ExecStopPost= undid what the killed supervisor left, and the restart
	// found nothing left.
	waitJournal(t, m, unit, "undoing what the supervisor of g left behind")
	if got := journal(t, m, "-u", unit); strings.Contains(got, "undoing what an earlier run") {
		t.Errorf("the restart found what the killed run left:\n%s", got)
	}
	m.MustRun(t, "systemctl", "stop", unit)
	requireNothingLeft(t, m, "g")
}

// TestFailures: a configuration error is one sentence and no restart loop;
// a kernel panic is reported as such; a kernel that stops answering is
// caught by the watchdog.
func TestFailures(t *testing.T) {
	m := bootWithGuests(t, map[string]string{
		"bad": "[Guest]\nRootImage=" + imageDir + "/missing.img\n",
		"p":   guestConf("guest.img", readyConsole, "umlsd.panic"),
		"w":   guestConf("guest.img", "[Service]\nWatchdogSec=2s\nRestart=no\n", "umlsd.none"),
		"lp":  guestConf("guest.img", "[Service]\nRestart=no\n", "umlsd.none"),
	})
	// The configuration refuses LockPersonality=; a drop-in of the
	// administrator's own is explained.
	m.WriteFile(t, "/etc/systemd/system/uml@lp.service.d/lock.conf", []byte("[Service]\nLockPersonality=yes\n"), 0o644)
	m.MustRun(t, "systemctl", "daemon-reload")
	if _, _, err := m.Run(t.Context(), "systemctl", "start", "uml@lp.service"); err == nil {
		t.Error("a guest whose unit locks its personality started")
	}
	if got := show(t, m, "uml@lp.service", "StatusText"); !strings.Contains(got, "remove LockPersonality= from its drop-ins") {
		t.Errorf("status %q does not say to remove LockPersonality=", got)
	}
	requireNothingLeft(t, m, "lp")

	if _, _, err := m.Run(t.Context(), "systemctl", "start", "uml@bad.service"); err == nil {
		t.Fatal("a guest without its image started")
	}
	want := "failed: RootImage=" + imageDir + "/missing.img: no such file or directory"
	if got := show(t, m, "uml@bad.service", "StatusText"); got != want {
		t.Errorf("status %q, want %q", got, want)
	}
	// Not "activating (auto-restart)": a configuration error is final.
	if got := show(t, m, "uml@bad.service", "ActiveState") + "/" + show(t, m, "uml@bad.service", "ExecMainStatus"); got != "failed/78" {
		t.Errorf("state/exit status %s, want failed/78", got)
	}

	if _, _, err := m.Run(t.Context(), "systemctl", "start", "uml@p.service"); err == nil {
		t.Fatal("a guest that panics before it is ready started")
	}
	if got := journal(t, m, "-u", "uml@p.service", "-p", "err"); !strings.Contains(got, "the guest kernel panicked") {
		t.Errorf("no panic reported at priority err:\n%s", journal(t, m, "-u", "uml@p.service"))
	}
	if got := show(t, m, "uml@p.service", "ExecMainStatus"); got != "3" {
		t.Errorf("exit status %s after a panic, want 3", got)
	}
	m.MustRun(t, "systemctl", "stop", "uml@p.service")
	requireNothingLeft(t, m, "p")

	// A frozen kernel does not answer on its management console: no more
	// watchdog pings.
	timedStart(t, m, "uml@w.service")
	m.MustRun(t, "kill", "-STOP", "--", "-"+kernelPID(t, m, "uml@w.service"))
	deadline := time.Now().Add(20 * time.Second)
	for show(t, m, "uml@w.service", "ActiveState") != "failed" {
		if time.Now().After(deadline) {
			t.Fatalf("a frozen guest with WatchdogSec=2s is still %s:\n%s", show(t, m, "uml@w.service", "ActiveState"), status(t, m, "uml@w.service"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got := show(t, m, "uml@w.service", "Result"); got != "watchdog" {
		t.Errorf("a frozen guest failed with result %q, want watchdog", got)
	}
	requireNothingLeft(t, m, "w")
}

// TestGuestEndings: a guest that powers itself off ends the service
// cleanly, one that sets an exit code fails it, one that is never ready is
// stopped after ReadyTimeout=, and Chroot=no runs without the chroot.
func TestGuestEndings(t *testing.T) {
	norestart := "[Service]\nRestart=no\n"
	m := bootWithGuests(t, map[string]string{
		"off":  guestConf("guest.img", readyConsole+norestart, "umlsd.poweroff"),
		"code": guestConf("guest.img", readyConsole+norestart, "umlsd.exitcode"),
		"late": guestConf("guest.img", "Ready=console:^NEVER$\nReadyTimeout=3s\n"+norestart, "umlsd.none"),
		"free": guestConf("guest.img", "Chroot=no\n"+readyConsole, "umlsd.none"),
	})
	for _, tt := range []struct{ name, state, status, journal string }{
		{"off", "inactive", "0", "the guest powered off"},
		{"code", "failed", "5", "the kernel exited with status 7"},
	} {
		unit := "uml@" + tt.name + ".service"
		timedStart(t, m, unit)
		deadline := time.Now().Add(30 * time.Second)
		for show(t, m, unit, "ActiveState") != tt.state {
			if time.Now().After(deadline) {
				t.Fatalf("%s did not end %s:\n%s", unit, tt.state, status(t, m, unit))
			}
			time.Sleep(100 * time.Millisecond)
		}
		if got := show(t, m, unit, "ExecMainStatus"); got != tt.status {
			t.Errorf("%s exited with %s, want %s", unit, got, tt.status)
		}
		waitJournal(t, m, unit, tt.journal)
		requireNothingLeft(t, m, tt.name)
	}

	start := time.Now()
	if _, _, err := m.Run(t.Context(), "systemctl", "start", "uml@late.service"); err == nil {
		t.Error("a guest that is never ready started")
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("a start with ReadyTimeout=3s failed only after %v", d)
	}
	if got := show(t, m, "uml@late.service", "StatusText"); !strings.Contains(got, "not ready within ReadyTimeout=3s") {
		t.Errorf("status %q does not say why the start failed", got)
	}
	requireNothingLeft(t, m, "late")

	timedStart(t, m, "uml@free.service")
	if root := strings.TrimSpace(m.MustRun(t, "readlink", "/proc/"+kernelPID(t, m, "uml@free.service")+"/root")); root != "/" {
		t.Errorf("with Chroot=no the kernel's root is %q, want /", root)
	}
	m.MustRun(t, "systemctl", "stop", "uml@free.service")
	waitJournal(t, m, "uml@free.service", "stopped: the guest shut down cleanly")
	requireNothingLeft(t, m, "free")
}

// TestStoppingUMLTargetStopsEveryGuest: systemctl stop uml.target returns
// once every guest is down.
func TestStoppingUMLTargetStopsEveryGuest(t *testing.T) {
	m := bootWithGuests(t, map[string]string{
		"a": guestConf("guest.img", "", "umlsd.none"),
		"b": guestConf("guest.img", "", "umlsd.none"),
	})
	m.MustRun(t, "systemctl", "start", "uml@a.service", "uml@b.service")
	m.MustRun(t, "systemctl", "is-active", "uml.target")
	m.MustRun(t, "systemctl", "stop", "uml.target")
	for _, u := range []string{"uml@a.service", "uml@b.service"} {
		if state, _, _ := m.Run(t.Context(), "systemctl", "is-active", u); strings.TrimSpace(state) != "inactive" {
			t.Errorf("%s is %q right after systemctl stop uml.target returned, want inactive", u, strings.TrimSpace(state))
		}
	}
	requireNothingLeft(t, m, "a")
	requireNothingLeft(t, m, "b")
}
