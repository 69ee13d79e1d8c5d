package testbed

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func requireMachine(t *testing.T) {
	t.Helper()
	RequireRoot(t)
	RequireCommands(t, "systemd-nspawn", "nsenter", "mount", "journalctl", "ip")
}

func TestMachine(t *testing.T) {
	requireMachine(t)
	t.Parallel()
	ctx := t.Context()
	m := Boot(ctx, t, Options{Files: map[string][]byte{
		"/etc/testbed/from-options": []byte("from options\n"),
	}})

	t.Run("runs", func(t *testing.T) {
		if got := strings.TrimSpace(m.MustRun(t, "systemctl", "is-system-running")); got != "running" {
			t.Errorf("is-system-running = %q, want running", got)
		}
		if got := strings.TrimSpace(m.MustRun(t, "hostname")); got != m.Name() {
			t.Errorf("hostname = %q, want %q", got, m.Name())
		}
		if got := strings.TrimSpace(m.MustRun(t, "systemd-detect-virt", "--container")); got != "systemd-nspawn" {
			t.Errorf("systemd-detect-virt --container = %q, want systemd-nspawn", got)
		}
		// As documented: there is no kernel log device in the machine.
		m.MustRun(t, "test", "!", "-e", "/dev/kmsg")
	})

	t.Run("run error", func(t *testing.T) {
		stdout, stderr, err := m.Run(ctx, "sh", "-c", "echo out; echo oops >&2; exit 3")
		if err == nil {
			t.Fatal("Run of a failing command: no error")
		}
		for _, want := range []string{"exit status 3", "oops", `"sh"`} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not contain %q", err, want)
			}
		}
		if stdout != "out\n" || stderr != "oops\n" {
			t.Errorf("stdout, stderr = %q, %q; want %q, %q", stdout, stderr, "out\n", "oops\n")
		}
	})

	t.Run("own network namespace", func(t *testing.T) {
		var links []string
		for line := range strings.Lines(m.MustRun(t, "ip", "-o", "link", "show")) {
			// "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 ..."
			if f := strings.Fields(line); len(f) > 1 {
				links = append(links, strings.TrimSuffix(strings.SplitN(f[1], "@", 2)[0], ":"))
			}
		}
		if strings.Join(links, " ") != "lo" {
			t.Errorf("links in machine = %q, want only lo", links)
		}
		inside, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", m.leader()))
		if err != nil {
			t.Fatal(err)
		}
		outside, err := os.Readlink("/proc/self/ns/net")
		if err != nil {
			t.Fatal(err)
		}
		if inside == outside {
			t.Errorf("machine shares the test's network namespace %s", inside)
		}
	})

	t.Run("tun", func(t *testing.T) {
		// UML guests need /dev/net/tun: it is bound in, and usable.
		m.MustRun(t, "ip", "tuntap", "add", "dev", "tbtap0", "mode", "tap")
		m.MustRun(t, "ip", "link", "show", "tbtap0")
		m.MustRun(t, "ip", "tuntap", "del", "dev", "tbtap0", "mode", "tap")
	})

	t.Run("WriteFile", func(t *testing.T) {
		m.WriteFile(t, "/etc/testbed/new/dir/probe", []byte("hello\n"), 0o600)
		if got := m.MustRun(t, "cat", "/etc/testbed/new/dir/probe"); got != "hello\n" {
			t.Errorf("file written with WriteFile reads %q inside", got)
		}
		if got := strings.TrimSpace(m.MustRun(t, "stat", "-c", "%a %u:%g", "/etc/testbed/new/dir/probe")); got != "600 0:0" {
			t.Errorf("file written with WriteFile: mode and owner %q, want 600 0:0", got)
		}
		if got := m.MustRun(t, "cat", "/etc/testbed/from-options"); got != "from options\n" {
			t.Errorf("file from Options.Files reads %q inside", got)
		}
		// Overwriting changes the mode too.
		m.WriteFile(t, "/etc/testbed/new/dir/probe", []byte("again\n"), 0o640)
		if got := strings.TrimSpace(m.MustRun(t, "stat", "-c", "%a", "/etc/testbed/new/dir/probe")); got != "640" {
			t.Errorf("rewritten file: mode %s, want 640", got)
		}
		if _, err := os.Stat("/etc/testbed/new/dir/probe"); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("file written into the machine is on the host: stat: %v", err)
		}
	})

	t.Run("WriteFile does not escape", func(t *testing.T) {
		// An absolute symbolic link in the machine points at the host's
		// root when followed from the host: WriteFile refuses to follow it.
		m.MustRun(t, "mkdir", "-p", "/var/tmp/escape")
		m.MustRun(t, "ln", "-s", "/tmp", "/var/tmp/escape/link")
		root, err := os.OpenRoot(m.Root())
		if err != nil {
			t.Fatal(err)
		}
		defer root.Close()
		name := "/var/tmp/escape/link/testbed-escape-" + m.Name()
		if err := writeIn(root, name, []byte("x"), 0o644); err == nil {
			t.Errorf("writeIn through an absolute symlink succeeded")
		}
		if _, err := os.Stat("/tmp/testbed-escape-" + m.Name()); !errors.Is(err, fs.ErrNotExist) {
			os.Remove("/tmp/testbed-escape-" + m.Name())
			t.Errorf("a write into the machine reached the host: stat: %v", err)
		}
	})

	t.Run("overlay", func(t *testing.T) {
		// The host's files are visible inside (lowerdir=/) — a file of the
		// root file system: the checkout may be where the machine mounts a
		// tmpfs of its own (/tmp) ...
		host, err := os.ReadFile("/usr/lib/os-release")
		if err != nil {
			t.Fatal(err)
		}
		if inside := m.MustRun(t, "cat", "/usr/lib/os-release"); inside != string(host) {
			t.Errorf("/usr/lib/os-release inside the machine differs from the host's:\n%s", inside)
		}
		// ... but what is created inside does not reach the host.
		name := "/var/tmp/testbed-inside-" + m.Name()
		m.MustRun(t, "sh", "-c", "echo inside >"+name)
		if _, err := os.Stat(name); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("file created in the machine is on the host: stat %s: %v", name, err)
		}
		if data, err := os.ReadFile(m.Root() + name); err != nil || string(data) != "inside\n" {
			t.Errorf("file created in the machine, read through Root(): %q, %v", data, err)
		}
	})

	t.Run("journal", func(t *testing.T) {
		m.MustRun(t, "logger", "-t", "testbed", "journal-marker-"+m.Name())
		// journald may take a moment to index the message.
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(m.Journal(ctx), "journal-marker-"+m.Name()) {
			if time.Now().After(deadline) {
				t.Fatalf("journal lacks the logged marker:\n%s", m.Journal(ctx))
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}

func TestReboot(t *testing.T) {
	requireMachine(t)
	t.Parallel()
	ctx := t.Context()
	const unit = `[Unit]
Description=testbed autostart probe

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'echo boot >>/var/lib/testbed-boots'

[Install]
WantedBy=multi-user.target
`
	m := Boot(ctx, t, Options{Files: map[string][]byte{"/etc/systemd/system/testbed-autostart.service": []byte(unit)}})
	m.MustRun(t, "systemctl", "enable", "testbed-autostart.service")
	m.MustRun(t, "touch", "/var/lib/testbed-marker")
	if _, _, err := m.Run(ctx, "test", "-e", "/var/lib/testbed-boots"); err == nil {
		t.Fatal("autostart unit ran before it was enabled")
	}
	oldPID1 := m.leader()
	oldBootID := m.MustRun(t, "cat", "/proc/sys/kernel/random/boot_id")

	m.Reboot(ctx, t)

	if m.leader() == oldPID1 {
		t.Errorf("machine's PID 1 is still %d after reboot", oldPID1)
	}
	if got := m.MustRun(t, "cat", "/proc/sys/kernel/random/boot_id"); got == oldBootID {
		t.Errorf("boot ID unchanged after reboot: %s", got)
	}
	if got := strings.TrimSpace(m.MustRun(t, "systemctl", "is-system-running")); got != "running" {
		t.Errorf("after reboot: is-system-running = %q, want running", got)
	}
	m.MustRun(t, "test", "-e", "/var/lib/testbed-marker")
	if got := m.MustRun(t, "cat", "/var/lib/testbed-boots"); got != "boot\n" {
		t.Errorf("autostart unit ran %q times, want once at the second boot", got)
	}
	if got := strings.TrimSpace(m.MustRun(t, "systemctl", "is-active", "testbed-autostart.service")); got != "active" {
		t.Errorf("autostart unit is %s after reboot", got)
	}
	boots := m.MustRun(t, "journalctl", "--list-boots", "--no-pager")
	if n := len(regexp.MustCompile(`(?m)^\s*-?\d+ [0-9a-f]{32} `).FindAllString(boots, -1)); n != 2 {
		t.Errorf("journal lists %d boots, want 2:\n%s", n, boots)
	}
}

// snapshot is what a machine holds on the host, for checking that it is gone.
type snapshot struct {
	Name    string
	Procs   map[string][2]uint64 // role: pid, start time
	Cgroups []string
	MountNS string // the helper's mount namespace, "mnt:[inode]"
	// NSHolders are the processes in MountNS when the snapshot was taken
	// (pid, start time). The kernel reuses namespace numbers at once, so a
	// process found in a namespace of that number later may be unrelated.
	NSHolders [][2]uint64
}

func snapshotOf(t testing.TB, m *Machine) snapshot {
	t.Helper()
	s := snapshot{Name: m.name, Procs: map[string][2]uint64{}, Cgroups: m.cgroups}
	for role, pid := range map[string]int{
		"helper":         m.helper.Process.Pid,
		"systemd-nspawn": m.current().cmd.Process.Pid,
		"PID 1":          m.leader(),
	} {
		start, err := procStartTime(pid)
		if err != nil {
			t.Fatalf("%s: %v", role, err)
		}
		s.Procs[role] = [2]uint64{uint64(pid), start}
	}
	var err error
	if s.MountNS, err = os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", m.helper.Process.Pid)); err != nil {
		t.Fatal(err)
	}
	for _, p := range nsHolders(s.MountNS) {
		if start, err := procStartTime(p); err == nil {
			s.NSHolders = append(s.NSHolders, [2]uint64{uint64(p), start})
		}
	}
	return s
}

// nsHolders returns the processes in a mount namespace.
func nsHolders(ns string) []int {
	var pids []int
	links, _ := filepath.Glob("/proc/[0-9]*/ns/mnt")
	for _, l := range links {
		if target, err := os.Readlink(l); err == nil && target == ns {
			if pid, err := strconv.Atoi(strings.Split(l, "/")[2]); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// leftovers returns what is left of a machine on the host.
func leftovers(s snapshot) []string {
	var left []string
	for role, p := range s.Procs {
		if alive(int(p[0]), p[1]) {
			left = append(left, fmt.Sprintf("process %s (%d)", role, p[0]))
		}
	}
	for _, cg := range s.Cgroups {
		if _, err := os.Stat(cg); err == nil {
			left = append(left, "cgroup "+cg)
		}
	}
	// Anything still holding the mount namespace holds the overlay.
	for _, p := range s.NSHolders {
		link := fmt.Sprintf("/proc/%d/ns/mnt", p[0])
		if ns, err := os.Readlink(link); err == nil && ns == s.MountNS && alive(int(p[0]), p[1]) {
			left = append(left, "mount namespace "+ns+" of "+link)
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for line := range strings.Lines(string(mounts)) {
		if strings.Contains(line, s.Name) || strings.Contains(line, "umlsd-testbed") {
			left = append(left, "mount "+strings.TrimSpace(line))
		}
	}
	for _, dir := range []string{filepath.Join(runDir, s.Name), "/run/systemd/nspawn/propagate/" + s.Name} {
		if _, err := os.Lstat(dir); err == nil {
			left = append(left, "directory "+dir)
		}
	}
	return left
}

// waitGone waits until nothing is left of a machine.
func waitGone(t *testing.T, s snapshot, timeout time.Duration) {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		left := leftovers(s)
		if len(left) == 0 {
			t.Logf("nothing left of machine %s after %v", s.Name, time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("left of machine %s after %v:\n%s", s.Name, timeout, strings.Join(left, "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestTeardown(t *testing.T) {
	requireMachine(t)
	t.Parallel()
	var s snapshot
	t.Run("machine", func(t *testing.T) {
		m := Boot(t.Context(), t, Options{})
		m.MustRun(t, "touch", "/var/tmp/teardown")
		s = snapshotOf(t, m)
		if left := leftovers(s); len(left) == 0 {
			t.Fatal("leftovers finds nothing of a running machine")
		}
	})
	// The subtest's cleanup has run: nothing may be left, at once.
	if s.Name == "" {
		t.Fatal("machine did not boot")
	}
	waitGone(t, s, 0)
}

// TestKilled kills a test binary that has booted a machine, with SIGKILL and
// with the panic of -timeout, neither of which runs t.Cleanup, and makes the
// test panic: the machine must go away all the same.
func TestKilled(t *testing.T) {
	requireMachine(t)
	t.Parallel()
	for _, tc := range []struct {
		name    string
		timeout string // -test.timeout of the child
		kill    bool   // SIGKILL the child once its machine runs
		want    string // in the child's output
	}{
		{name: "SIGKILL", timeout: "10m", kill: true},
		{name: "timeout", timeout: "8s", want: "panic: test timed out after 8s"},
		{name: "panic", timeout: "10m", want: "panic: testbed test panics"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestHelperProcess$", "-test.v", "-test.count=1", "-test.timeout="+tc.timeout)
			cmd.Env = append(os.Environ(), "TESTBED_HELPER_PROCESS="+tc.name)
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// Read the child's output until it ends; hand over the snapshot.
			out := newBuffer("")
			snap := make(chan snapshot, 1)
			eof := make(chan struct{})
			go func() {
				defer close(eof)
				sc := bufio.NewScanner(stdout)
				for sc.Scan() {
					fmt.Fprintln(out, sc.Text())
					if j, ok := strings.CutPrefix(sc.Text(), "SNAPSHOT "); ok {
						var s snapshot
						if err := json.Unmarshal([]byte(j), &s); err == nil {
							snap <- s
						}
					}
				}
			}()
			var s snapshot
			select {
			case s = <-snap:
			case <-eof:
				_ = cmd.Wait()
				t.Fatalf("child printed no snapshot:\n%s%s", out, stderr.String())
			}
			if tc.kill {
				if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
			}
			<-eof
			err = cmd.Wait()
			t.Logf("child %s: %v", tc.name, err)
			if tc.kill && !strings.Contains(fmt.Sprint(err), "killed") {
				t.Errorf("child was not killed: %v", err)
			}
			if !strings.Contains(stderr.String()+out.String(), tc.want) {
				t.Errorf("child output lacks %q: %v\n%s%s", tc.want, err, out, stderr.String())
			}
			if left := leftovers(s); len(left) > 0 {
				t.Logf("just after the child died:\n%s", strings.Join(left, "\n"))
			}

			waitGone(t, s, 30*time.Second)
		})
	}
}

// TestHelperProcess is the child of TestKilled: it boots a machine, prints
// its snapshot and hangs until it is killed.
func TestHelperProcess(t *testing.T) {
	mode := os.Getenv("TESTBED_HELPER_PROCESS")
	if mode == "" {
		return // not a test of its own: the child process TestKilled starts
	}
	m := Boot(t.Context(), t, Options{})
	m.MustRun(t, "touch", "/var/tmp/killed")
	data, err := json.Marshal(snapshotOf(t, m))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("SNAPSHOT %s\n", data)
	if mode == "panic" {
		panic("testbed test panics")
	}
	select {}
}

// TestInstall boots a machine with the project installed into it.
func TestInstall(t *testing.T) {
	requireMachine(t)
	RequireCommands(t, "make")
	t.Parallel()
	m := Boot(t.Context(), t, Options{Install: true})
	m.MustRun(t, "test", "-f", "/lib/systemd/system/uml@.service")
	m.MustRun(t, "systemctl", "cat", "uml@.service")
}

func TestStaleMachines(t *testing.T) {
	requireMachine(t)
	t.Parallel()
	// A machine cgroup whose owner is gone, as a killed helper would leave it:
	// with a process in it.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	roots, err := cgroupRoots()
	if err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprintf("%d-%d-stale", dead.Process.Pid, 1)
	var cgs []string
	for _, root := range roots {
		cg, err := createCgroup(root, id)
		if err != nil {
			t.Fatal(err)
		}
		cgs = append(cgs, cg)
	}
	sleeper := exec.Command("sleep", "600")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	for _, cg := range cgs {
		if err := os.MkdirAll(filepath.Join(cg, "payload"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := writeExisting(filepath.Join(cg, "payload", "cgroup.procs"), strconv.Itoa(sleeper.Process.Pid)); err != nil {
			t.Fatal(err)
		}
	}
	found := false
	for _, cg := range staleMachines(roots) {
		if strings.HasSuffix(cg, "/"+id) {
			found = true
		}
	}
	// A concurrent Boot (another test, another test binary) may have
	// removed it already.
	if _, err := os.Stat(cgs[0]); !found && err == nil {
		t.Fatalf("staleMachines does not list %s", id)
	}
	removeStale(t.Context(), t, roots)
	if err := sleeper.Wait(); err == nil {
		t.Error("process in a stale machine's cgroup was not killed")
	}
	for _, cg := range cgs {
		if _, err := os.Stat(cg); err == nil {
			t.Errorf("stale cgroup %s not removed", cg)
		}
	}
	// A live owner's machines are not stale.
	for _, cg := range staleMachines(roots) {
		if pid, _, _ := parseMachineID(filepath.Base(cg)); pid == os.Getpid() {
			t.Errorf("staleMachines lists %s, a machine of this live process", cg)
		}
	}
}

func TestRequireCommandsMessage(t *testing.T) {
	if got := packageOf("systemd-nspawn"); got != "systemd-container" {
		t.Errorf("packageOf(systemd-nspawn) = %q", got)
	}
}
