// Package testbed boots throwaway systemd machines for end-to-end tests.
//
// A machine is the host's own root file system under a copy-on-write overlay
// (lowerdir=/, upper and work directories on a tmpfs) booted by
// systemd-nspawn with its own network namespace. Whatever a test writes into
// it (Machine.Root, Machine.WriteFile, `make install DESTDIR=`) never reaches
// the host's disk, and everything is thrown away at the end of the test. A
// machine boots in about half a second.
//
// # Teardown, also when the test binary dies
//
// t.Cleanup powers the machine off (SIGTERM to systemd-nspawn, bounded wait,
// then SIGKILL) and removes everything. But t.Cleanup does not run when the
// test binary is killed, or panics on -timeout. So nothing a machine leaves
// behind may depend on it:
//
//   - All mounts (a private tmpfs on /run, the machine's tmpfs and its overlay)
//     are made in a private mount namespace owned by a helper process, a child
//     of the test process. They exist nowhere else: when the helper and the
//     machine are gone, so are they, and the host's /run never sees a
//     directory of a machine. Teardown never removes files: there is nothing
//     on the host to remove.
//   - systemd-nspawn and the machine run in a cgroup of their own
//     (umlsd-testbed/<owner pid>-<owner start time>-<random> in the
//     name=systemd and unified hierarchies). It is also what keeps concurrent
//     machines apart: with --keep-unit, systemd-nspawn puts the container into
//     "payload" under its own cgroup.
//   - The helper waits for EOF on its stdin, a pipe whose only writer is the
//     test process. The test closes it at teardown; the kernel closes it when
//     the test process dies in any way. On EOF the helper kills everything in
//     the machine's cgroups (the container's PID 1 takes its whole PID
//     namespace with it), removes the cgroups and exits, which drops the
//     mount namespace. (systemd-nspawn itself does not take the container down
//     when it is killed: the container's PID 1 is reparented and survives.)
//   - Should the helper itself have been killed, the next Boot finds cgroups
//     whose owner is gone and kills and removes them.
//
// Machine.Root is the overlay's merged directory as the test process sees it:
// through /proc/<helper pid>/root, which resolves paths in the helper's mount
// namespace.
package testbed

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// runDir is where, in the helper's private /run, machines keep their
	// tmpfs. No host path is shared between machines.
	runDir = "/run/umlsd-testbed"

	// bootTimeout bounds the wait for "running" after systemd-nspawn starts.
	bootTimeout = time.Minute
	// poweroffTimeout bounds a clean poweroff before the machine is killed.
	poweroffTimeout = 30 * time.Second
	// teardownTimeout bounds the whole of a machine's teardown.
	teardownTimeout = 90 * time.Second
)

// disabledUnit is a unit the host has enabled that the machine does without.
type disabledUnit struct {
	name string
	// mask: the unit is enabled without a .wants link (a SysV init script
	// run through systemd-sysv-generator): mask it instead.
	mask   bool
	reason string
}

// disabledUnits lists the units that are enabled on the host (see `ls
// /etc/systemd/system/*.wants/` and /etc/rc?.d) and would slow down or
// disturb a machine. Their .wants links are removed in the overlay (which
// only creates whiteouts in the upper layer) or they are masked there.
//
// Left enabled, because they cost nothing: machines.target and
// remote-fs.target (empty targets); systemd-timesyncd.service and
// systemd-pstore.service (ConditionVirtualization=!container skips them);
// getty@tty1.service (ConditionPathExists=/dev/tty0 skips it).
func disabledUnits() []disabledUnit {
	const timer = "a Persistent= maintenance timer that has never run here, so it would fire right after boot and compete for the CPU"
	return []disabledUnit{
		{name: "postgresql.service", reason: "a database server of the VM image: 2.4 s of a 2.8 s boot"},
		{name: "uml-utilities.service", mask: true, reason: "the SysV script of uml-utilities starts a uml_switch daemon: 1.1 s of boot, and tests set up their own networks"},
		{name: "e2scrub_reap.service", reason: "removes stale e2scrub LVM snapshots: there are no LVM volumes in a machine"},
		{name: "apt-daily.timer", reason: timer},
		{name: "apt-daily-upgrade.timer", reason: timer},
		{name: "dpkg-db-backup.timer", reason: timer},
		{name: "e2scrub_all.timer", reason: timer},
		{name: "fstrim.timer", reason: timer},
		{name: "man-db.timer", reason: timer},
	}
}

// Options configures a machine.
type Options struct {
	// Install runs `make install DESTDIR=<machine root>` in the repository
	// root (the directory of go.mod above the working directory) before the
	// machine boots. Concurrent installs are serialized with a lock on the
	// repository directory: they build into the same bin/ and build/.
	Install bool

	// Files are written into the machine before it boots, after Install:
	// path inside the machine to contents, mode 0644, owned by root.
	Files map[string][]byte

	// Mask lists further units to mask in the machine before it boots.
	Mask []string

	// AllowDegraded accepts a machine that boots to "degraded" (the failed
	// units are logged); by default that fails the test.
	AllowDegraded bool
}

// Machine is a booted throwaway systemd machine. Its methods may be called
// from several goroutines.
type Machine struct {
	name    string   // host name inside the machine, "tb-<random>"
	id      string   // cgroup name, see machineID
	dir     string   // runDir/name, in the helper's mount namespace
	roots   []string // cgroup hierarchies
	cgroups []string // the machine's cgroup in each hierarchy
	opts    Options

	helper       *exec.Cmd
	helperIn     io.WriteCloser
	helperOut    *buffer
	helperDone   chan struct{}
	helperErr    error // set before helperDone is closed
	helperClosed bool

	mu   sync.Mutex
	boot *boot // the running systemd-nspawn, nil when powered off
}

// boot is one run of systemd-nspawn.
type boot struct {
	cmd  *exec.Cmd
	pid1 int           // the machine's PID 1, as seen from the host
	done chan struct{} // closed when systemd-nspawn has exited
	err  error         // its exit status, set before done is closed
	up   bool          // the machine has booted; guarded by Machine.mu
}

// helperScript owns a machine's mounts. The test starts it with
// unshare(CLONE_NEWNS) and / made private, so nothing it mounts propagates to
// the host. $1 is the machine's directory, the other arguments its cgroups.
//
//  1. It mounts a private tmpfs on /run: nothing made under /run (the
//     machine's directories, systemd-nspawn's /run/systemd/nspawn) is seen by
//     or left on the host. Then the machine's tmpfs and the overlay on it.
//  2. It says "ready" and waits for EOF on stdin. The test closes stdin at
//     teardown; the kernel closes it when the test process dies, whatever
//     kills it. From then on it writes nothing to its stdout or stderr: the
//     test may be gone, and a write to its pipes would kill it (SIGPIPE).
//  3. It kills everything in the machine's cgroups (cgroup.kill where the
//     kernel has it, SIGKILL to each listed process otherwise, until empty),
//     removes the cgroups deepest first, and the umlsd-testbed directory
//     above them if no other machine uses it.
//  4. It exits, which drops the mount namespace and every mount in it.
const helperScript = `set -eu
dir=$1
shift
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mkdir -p "$dir"
mount -t tmpfs -o mode=0700 tmpfs "$dir"
mkdir "$dir/upper" "$dir/work" "$dir/merged"
mount -t overlay overlay -o "lowerdir=/,upperdir=$dir/upper,workdir=$dir/work" "$dir/merged"
echo ready
cat >/dev/null || :
exec >/dev/null 2>&1
set +e
for _ in $(seq 500); do
	pids=$(for cg in "$@"; do
		[ ! -e "$cg/cgroup.kill" ] || echo 1 >"$cg/cgroup.kill"
		find "$cg" -name cgroup.procs -exec cat {} +
	done)
	[ -n "$pids" ] || break
	kill -KILL $pids
	sleep 0.02
done
for cg in "$@"; do
	for _ in $(seq 100); do
		find "$cg" -depth -type d -exec rmdir {} +
		[ -e "$cg" ] || break
		sleep 0.02
	done
	rmdir "${cg%/*}"
done
`

// Boot boots a throwaway systemd machine and waits until it is running. It
// registers the machine's teardown with t.Cleanup; if the test failed, the
// teardown first writes the machine's journal into the test log. Boot skips
// the test when it does not run as root or systemd-nspawn is missing (and
// fails it in CI), and fails the test if the machine does not boot.
//
// The machine has a network namespace of its own with only lo in it, and
// /dev/net/tun. Its host name is Machine.Name, its machine ID its own, its
// journal persistent (in the upper layer, so it survives Reboot). It has no
// /dev/kmsg. Some host units are disabled in it, see disabledUnits.
func Boot(ctx context.Context, t testing.TB, opts Options) *Machine {
	t.Helper()
	RequireRoot(t)
	RequireCommands(t, "systemd-nspawn", "nsenter", "mount", "journalctl")
	if opts.Install {
		RequireCommands(t, "make")
	}
	roots, err := cgroupRoots()
	if err != nil {
		t.Fatalf("booting machine: %v", err)
	}
	removeStale(ctx, t, roots)

	suffix, err := randomHex(4)
	if err != nil {
		t.Fatalf("booting machine: %v", err)
	}
	id, err := machineID(suffix)
	if err != nil {
		t.Fatalf("booting machine: %v", err)
	}
	m := &Machine{
		name:       "tb-" + suffix,
		id:         id,
		dir:        runDir + "/tb-" + suffix,
		roots:      roots,
		opts:       opts,
		helperDone: make(chan struct{}),
	}
	// From here on, whatever happens, the teardown undoes what was done.
	t.Cleanup(func() { m.teardown(t) })

	for _, root := range roots {
		cg, err := createCgroup(root, id)
		if err != nil {
			t.Fatalf("booting machine %s: %v", m.name, err)
		}
		m.cgroups = append(m.cgroups, cg)
	}
	if err := m.startHelper(ctx); err != nil {
		t.Fatalf("booting machine %s: %v", m.name, err)
	}
	if err := m.prepare(ctx); err != nil {
		t.Fatalf("booting machine %s: %v", m.name, err)
	}
	start := time.Now()
	state, err := m.start(ctx)
	if err != nil {
		t.Fatalf("booting machine %s: %v", m.name, err)
	}
	t.Logf("machine %s %s after %v; root %s", m.name, state, time.Since(start).Round(time.Millisecond), m.Root())
	return m
}

// Name returns the machine's name, also its host name.
func (m *Machine) Name() string { return m.name }

// Root returns the host path of the machine's root directory, the overlay's
// merged directory: files written there are visible inside, and nothing
// written there reaches the host's disk. The path goes through
// /proc/<helper pid>/root because the overlay is mounted only in the helper's
// mount namespace. Absolute symbolic links inside the machine resolve against
// the host's root when followed through this path: write with
// Machine.WriteFile, which cannot escape the machine.
func (m *Machine) Root() string {
	return m.helperPath("merged")
}

// helperPath returns the host path of a file in the machine's directory.
func (m *Machine) helperPath(name string) string {
	return fmt.Sprintf("/proc/%d/root%s/%s", m.helper.Process.Pid, m.dir, name)
}

// startHelper starts the helper that owns the machine's mounts and waits until
// they are made.
func (m *Machine) startHelper(ctx context.Context) error {
	args := append([]string{"-c", helperScript, "umlsd-testbed-helper", m.dir}, m.cgroups...)
	cmd := exec.Command("sh", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Go also makes / private (MS_REC|MS_PRIVATE) in the new namespace.
		Unshareflags: syscall.CLONE_NEWNS,
		// Out of the test's process group: a ^C meant for the test must not
		// kill the helper before it has cleaned up.
		Setpgid: true,
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		return fmt.Errorf("starting helper: %w", err)
	}
	m.helperOut = newBuffer("ready\n")
	cmd.Stdout = m.helperOut
	cmd.Stderr = m.helperOut
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting helper: %w", err)
	}
	m.helper, m.helperIn = cmd, in
	go func() {
		m.helperErr = cmd.Wait()
		close(m.helperDone)
	}()
	select {
	case <-m.helperOut.marked:
		return nil
	case <-m.helperDone:
		return fmt.Errorf("mounting machine's overlay: %v: %s", m.helperErr, m.helperOut)
	case <-ctx.Done():
		return fmt.Errorf("mounting machine's overlay: %w", context.Cause(ctx))
	}
}

// prepare readies the overlay for boot: disables host units, gives the
// machine its own machine ID, installs the project and writes Options.Files.
func (m *Machine) prepare(ctx context.Context) error {
	root, err := os.OpenRoot(m.Root())
	if err != nil {
		return fmt.Errorf("preparing machine: %w", err)
	}
	defer root.Close()

	for _, u := range disabledUnits() {
		if u.mask {
			if err := mask(root, u.name); err != nil {
				return err
			}
			continue
		}
		links, err := fs.Glob(root.FS(), "etc/systemd/system/*.wants/"+u.name)
		if err != nil {
			return fmt.Errorf("disabling %s: %w", u.name, err)
		}
		for _, l := range links {
			if err := root.Remove(l); err != nil {
				return fmt.Errorf("disabling %s: %w", u.name, err)
			}
		}
	}
	for _, name := range m.opts.Mask {
		if err := mask(root, name); err != nil {
			return err
		}
	}

	// Its own machine ID, rather than the host's: its journal is its own
	// (/var/log/journal/<machine id> in the upper layer), and systemd-nspawn
	// does not complain that "host and machine ids are equal".
	mid, err := randomHex(16)
	if err != nil {
		return err
	}
	if err := writeIn(root, "/etc/machine-id", []byte(mid+"\n"), 0o444); err != nil {
		return err
	}

	// systemd sets the host name from /etc/hostname, the host's, rather than
	// from systemd-nspawn's --machine=.
	if err := writeIn(root, "/etc/hostname", []byte(m.name+"\n"), 0o644); err != nil {
		return err
	}

	if m.opts.Install {
		if err := install(ctx, m.Root()); err != nil {
			return err
		}
	}
	for p, data := range m.opts.Files {
		if err := writeIn(root, p, data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// mask masks a unit in the machine: /etc/systemd/system/NAME -> /dev/null.
func mask(root *os.Root, name string) error {
	if name == "" || strings.Contains(name, "/") {
		return fmt.Errorf("masking unit %q: not a unit name", name)
	}
	p := "etc/systemd/system/" + name
	if err := root.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("masking %s: %w", name, err)
	}
	if err := root.Symlink("/dev/null", p); err != nil {
		return fmt.Errorf("masking %s: %w", name, err)
	}
	return nil
}

// writeIn writes a file into the machine, creating its parent directories
// (mode 0755). The file is owned by root and has exactly mode perm. It fails
// rather than follow a symbolic link out of the machine.
func writeIn(root *os.Root, name string, data []byte, perm os.FileMode) error {
	if !path.IsAbs(name) {
		return fmt.Errorf("writing %s into machine: path is not absolute", name)
	}
	rel := strings.TrimPrefix(path.Clean(name), "/")
	if rel == "" {
		return fmt.Errorf("writing %s into machine: not a file", name)
	}
	if dir := path.Dir(rel); dir != "." {
		if err := root.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("writing %s into machine: %w", name, err)
		}
	}
	if err := root.WriteFile(rel, data, perm); err != nil {
		return fmt.Errorf("writing %s into machine: %w", name, err)
	}
	// WriteFile honours the umask and keeps the mode and owner of an existing file.
	if err := root.Chmod(rel, perm); err != nil {
		return fmt.Errorf("writing %s into machine: %w", name, err)
	}
	if err := root.Lchown(rel, 0, 0); err != nil {
		return fmt.Errorf("writing %s into machine: %w", name, err)
	}
	return nil
}

// install runs `make install DESTDIR=destdir` in the repository root.
func install(ctx context.Context, destdir string) error {
	repo, err := repoRoot()
	if err != nil {
		return fmt.Errorf("installing into machine: %w", err)
	}
	// Several test processes may install at once: they would build into the
	// same bin/ and build/. Serialize them with a lock on the repository
	// directory, which needs no file of its own.
	lock, err := os.Open(repo)
	if err != nil {
		return fmt.Errorf("installing into machine: %w", err)
	}
	defer lock.Close()
	for {
		err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("installing into machine: locking %s: %w", repo, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("installing into machine: locking %s: %w", repo, context.Cause(ctx))
		case <-time.After(50 * time.Millisecond):
		}
	}
	cmd := exec.CommandContext(ctx, "make", "-C", repo, "install", "DESTDIR="+destdir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("running make install DESTDIR=%s in %s: %w\n%s", destdir, repo, err, out)
	}
	return nil
}

// repoRoot returns the directory of go.mod at or above the working directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding repository root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("finding repository root: no go.mod above the working directory")
		}
		dir = parent
	}
}

// start boots the machine (systemd-nspawn in the machine's cgroups, in the
// helper's mount namespace) and waits until it is running. It returns the
// state systemd reports: "running", or "degraded" if Options.AllowDegraded.
func (m *Machine) start(ctx context.Context) (string, error) {
	console, err := os.OpenFile(m.helperPath("console.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return "", fmt.Errorf("opening console log: %w", err)
	}
	defer console.Close()
	nspawn := []string{
		"systemd-nspawn",
		"--quiet",
		"--directory=" + m.dir + "/merged",
		"--boot",
		"--machine=" + m.name,
		// The host has no systemd bus to register with: both are needed.
		"--register=no",
		"--keep-unit",
		// The machine's console is a pseudo TTY that nothing reads: PID 1's
		// messages are in its journal. console.log gets only what
		// systemd-nspawn itself prints.
		"--console=passive",
		"--private-network",
		"--bind=/dev/net/tun",
		// The machine has its own machine ID and keeps its journal to itself.
		"--link-journal=no",
		// --property=DeviceAllow= is not needed, and not given: without
		// registration there is no scope for it to apply to ("--property=
		// settings will have no effect"), and no device cgroup keeps the
		// machine from /dev/net/tun.
	}
	// Join the machine's cgroups, then the helper's mount namespace, then
	// become systemd-nspawn: one process, which the test waits for.
	args := append([]string{"-c", `set -e
for cg in $1; do echo $$ >"$cg/cgroup.procs"; done
shift
exec "$@"`, "sh", strings.Join(m.cgroups, " "),
		"nsenter", fmt.Sprintf("--mount=/proc/%d/ns/mnt", m.helper.Process.Pid), "--"}, nspawn...)
	cmd := exec.Command("sh", args...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"}
	cmd.Stdout = console
	cmd.Stderr = console
	// Out of the test's process group, like the helper: the helper is the one
	// that kills the machine if the test dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("starting systemd-nspawn: %w", err)
	}
	b := &boot{cmd: cmd, done: make(chan struct{})}
	go func() {
		b.err = cmd.Wait()
		close(b.done)
	}()
	m.mu.Lock()
	m.boot = b
	m.mu.Unlock()

	ctx, cancel := context.WithTimeout(ctx, bootTimeout)
	defer cancel()
	pid1, err := findPID1(ctx, b)
	if err != nil {
		return "", fmt.Errorf("finding machine's PID 1: %w; systemd-nspawn output:\n%s", err, m.console())
	}
	m.mu.Lock()
	b.pid1 = pid1
	m.mu.Unlock()
	state, err := m.waitRunning(ctx, b, pid1)
	if err != nil {
		return "", err
	}
	m.mu.Lock()
	b.up = true
	m.mu.Unlock()
	return state, nil
}

// findPID1 returns the machine's PID 1: the child of systemd-nspawn in a PID
// namespace other than ours.
func findPID1(ctx context.Context, b *boot) (int, error) {
	ours, err := os.Readlink("/proc/self/ns/pid")
	if err != nil {
		return 0, err
	}
	nspawn := b.cmd.Process.Pid
	for {
		entries, err := os.ReadDir("/proc")
		if err != nil {
			return 0, err
		}
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			if ppid, _, err := procParent(pid); err != nil || ppid != nspawn {
				continue
			}
			if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid)); err == nil && ns != ours {
				return pid, nil
			}
		}
		select {
		case <-b.done:
			return 0, fmt.Errorf("systemd-nspawn exited: %v", b.err)
		case <-ctx.Done():
			return 0, context.Cause(ctx)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// waitRunning waits until systemd in the machine has finished booting.
func (m *Machine) waitRunning(ctx context.Context, b *boot, pid1 int) (string, error) {
	var last string
	for {
		// Until the machine's PID 1 has set up its namespaces and exec'd
		// systemd, nsenter enters the wrong mount namespace and systemctl
		// says "offline"; until systemd listens on its private socket,
		// systemctl fails with "Failed to connect to bus". Try again.
		stdout, stderr, _ := m.runIn(ctx, pid1, "systemctl", "is-system-running", "--wait")
		state := strings.TrimSpace(stdout)
		last = strings.TrimSpace(state + " " + strings.TrimSpace(stderr))
		switch state {
		case "running":
			return state, nil
		case "degraded":
			failed, _, err := m.runIn(ctx, pid1, "systemctl", "list-units", "--failed", "--no-legend", "--plain", "--no-pager")
			if err != nil {
				failed = err.Error()
			}
			if m.opts.AllowDegraded {
				return state, nil
			}
			return "", fmt.Errorf("machine is degraded; failed units:\n%s", failed)
		case "maintenance", "stopping":
			return "", fmt.Errorf("machine is %s; systemd-nspawn output:\n%s", state, m.console())
		}
		select {
		case <-b.done:
			return "", fmt.Errorf("systemd-nspawn exited during boot: %v; systemd-nspawn output:\n%s", b.err, m.console())
		case <-ctx.Done():
			return "", fmt.Errorf("waiting for machine to run (last: %q): %w; systemd-nspawn output:\n%s", last, context.Cause(ctx), m.console())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// console returns what systemd-nspawn has printed (console.log).
func (m *Machine) console() string {
	data, err := os.ReadFile(m.helperPath("console.log"))
	if err != nil {
		return fmt.Sprintf("(reading console log: %v)", err)
	}
	return string(data)
}

// leader returns the machine's PID 1 as seen from the host, or 0 when the
// machine is not running.
func (m *Machine) leader() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.boot == nil {
		return 0
	}
	return m.boot.pid1
}

// current returns the running boot, or nil.
func (m *Machine) current() *boot {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.boot
}

// machineEnv is the environment of commands run in the machine: nothing of
// the test's environment leaks in, and output is plain.
func machineEnv() []string {
	return []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/root",
		"LANG=C.UTF-8",
		"TERM=dumb",
		"SYSTEMD_PAGER=",
		"SYSTEMD_COLORS=0",
	}
}

// Run runs a command inside the machine, in all of its PID 1's namespaces
// (nsenter -t PID1 -a). The error includes the command, its exit status and
// its stderr. A command must not leave processes behind that keep its output
// open: output after one second past its exit is lost.
func (m *Machine) Run(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	pid1 := m.leader()
	if pid1 == 0 {
		return "", "", fmt.Errorf("running %q in machine %s: machine is not running", args, m.name)
	}
	return m.runIn(ctx, pid1, args...)
}

func (m *Machine) runIn(ctx context.Context, pid1 int, args ...string) (string, string, error) {
	if len(args) == 0 {
		return "", "", fmt.Errorf("running in machine %s: no command", m.name)
	}
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(pid1), "-a", "--"}, args...)...)
	cmd.Env = machineEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err := cmd.Run()
	if errors.Is(err, exec.ErrWaitDelay) {
		err = nil // it exited successfully; a background process kept its output open
	}
	if err != nil {
		err = fmt.Errorf("running %q in machine %s: %w: %s", args, m.name, err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), stderr.String(), err
}

// MustRun runs a command inside the machine and returns its stdout. It fails
// the test if the command fails, with the command, its output and stderr.
func (m *Machine) MustRun(t testing.TB, args ...string) string {
	t.Helper()
	stdout, _, err := m.Run(t.Context(), args...)
	if err != nil {
		t.Fatalf("%v\nstdout:\n%s", err, stdout)
	}
	return stdout
}

// Command returns a command that runs args inside the machine, as Run
// does, for a caller that sets its standard streams (a terminal, say) and
// starts and waits for it. It dies with the test process.
func (m *Machine) Command(ctx context.Context, args ...string) (*exec.Cmd, error) {
	pid1 := m.leader()
	if pid1 == 0 {
		return nil, fmt.Errorf("running %q in machine %s: machine is not running", args, m.name)
	}
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(pid1), "-a", "--"}, args...)...)
	cmd.Env = machineEnv()
	cmd.WaitDelay = time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd, nil
}

// HostPath is where the host reaches path of the running machine: through
// its PID 1's root, which also shows what is mounted inside (its /run).
func (m *Machine) HostPath(path string) (string, error) {
	pid1 := m.leader()
	if pid1 == 0 {
		return "", fmt.Errorf("finding %s in machine %s: machine is not running", path, m.name)
	}
	return filepath.Join(procRoot(pid1), path), nil
}

func procRoot(pid int) string { return "/proc/" + strconv.Itoa(pid) + "/root" }

// WriteFile writes a file into the machine, at path inside the machine,
// creating parent directories. The file is owned by root with mode perm.
func (m *Machine) WriteFile(t testing.TB, path string, data []byte, perm os.FileMode) {
	t.Helper()
	root, err := os.OpenRoot(m.Root())
	if err != nil {
		t.Fatalf("writing %s into machine %s: %v", path, m.name, err)
	}
	defer root.Close()
	if err := writeIn(root, path, data, perm); err != nil {
		t.Fatalf("machine %s: %v", m.name, err)
	}
}

// Journal returns the machine's journal of the current boot (journalctl -b
// inside). When the machine is powered off, it returns the journal of its
// last boot, read from its disk. Errors are part of the returned text.
func (m *Machine) Journal(ctx context.Context) string {
	if m.leader() != 0 {
		stdout, _, err := m.Run(ctx, "journalctl", "-b", "--no-pager")
		if err != nil {
			return fmt.Sprintf("%s(%v)\n", stdout, err)
		}
		return stdout
	}
	cmd := exec.CommandContext(ctx, "journalctl", "-D", m.Root()+"/var/log/journal", "-b", "--no-pager")
	cmd.Env = machineEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Sprintf("%s(reading journal of machine %s from its disk: %v)\n", out, m.name, err)
	}
	return string(out)
}

// Reboot powers the machine off and boots it again from the same upper
// layer, which is what a boot-time autostart test needs, and waits until it
// is running again.
func (m *Machine) Reboot(ctx context.Context, t testing.TB) {
	t.Helper()
	forced, err := m.poweroff(ctx)
	if err != nil {
		t.Fatalf("rebooting machine %s: %v", m.name, err)
	}
	if forced {
		t.Logf("machine %s did not power off in time and was killed", m.name)
	}
	start := time.Now()
	state, err := m.start(ctx)
	if err != nil {
		t.Fatalf("rebooting machine %s: %v", m.name, err)
	}
	t.Logf("machine %s %s again after %v", m.name, state, time.Since(start).Round(time.Millisecond))
}

// poweroff powers the machine off: SIGTERM to systemd-nspawn, which asks the
// machine's systemd to power off; SIGKILL to all of it if that takes longer
// than poweroffTimeout (forced is then true).
func (m *Machine) poweroff(ctx context.Context) (forced bool, err error) {
	b := m.current()
	if b == nil {
		return false, nil
	}
	defer func() {
		m.mu.Lock()
		m.boot = nil
		m.mu.Unlock()
	}()
	// A machine that has not finished booting may not have installed the
	// signal handlers yet, and then ignores the request: wait less.
	m.mu.Lock()
	timeout := poweroffTimeout
	if !b.up {
		timeout = 5 * time.Second
	}
	m.mu.Unlock()
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-b.done:
	case <-timer.C:
		forced = true
	case <-ctx.Done():
		forced = true
	}
	if forced {
		_ = b.cmd.Process.Kill()
	}
	// Normally nothing is left once systemd-nspawn has exited; after a
	// SIGKILL the machine's PID 1 would survive it.
	kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := killCgroups(kctx, m.cgroups); err != nil {
		return forced, fmt.Errorf("powering off: %w", err)
	}
	select {
	case <-b.done:
	case <-kctx.Done():
		return forced, errors.New("powering off: systemd-nspawn does not exit")
	}
	return forced, nil
}

// teardown powers the machine off and releases everything it holds. If the
// test failed, it first logs the machine's journal and console.
func (m *Machine) teardown(t testing.TB) {
	ctx, cancel := context.WithTimeout(context.Background(), teardownTimeout)
	defer cancel()
	if t.Failed() && m.helper != nil {
		t.Logf("journal of machine %s:\n%s", m.name, m.Journal(ctx))
		t.Logf("systemd-nspawn output of machine %s:\n%s", m.name, m.console())
	}
	if forced, err := m.poweroff(ctx); err != nil {
		t.Errorf("tearing down machine %s: %v", m.name, err)
	} else if forced {
		t.Logf("machine %s did not power off in time and was killed", m.name)
	}
	if err := m.release(ctx); err != nil {
		t.Errorf("tearing down machine %s: %v", m.name, err)
	}
}

// release stops the helper, which drops the mounts, and removes the
// machine's cgroups.
func (m *Machine) release(ctx context.Context) error {
	if m.helper != nil && !m.helperClosed {
		m.helperClosed = true
		_ = m.helperIn.Close()
		timer := time.NewTimer(20 * time.Second)
		defer timer.Stop()
		select {
		case <-m.helperDone:
		case <-timer.C:
			_ = m.helper.Process.Kill()
			<-m.helperDone
		}
	}
	// The helper has done this; this is for when it could not.
	if err := killCgroups(ctx, m.cgroups); err != nil {
		return err
	}
	var errs []error
	for _, cg := range m.cgroups {
		if err := removeCgroup(cg); err != nil {
			errs = append(errs, err)
		}
	}
	for _, root := range m.roots {
		removeCgroupBase(root)
	}
	return errors.Join(errs...)
}

// removeStale kills and removes machines that test processes which died
// before their teardown left behind.
func removeStale(ctx context.Context, t testing.TB, roots []string) {
	t.Helper()
	stale := staleMachines(roots)
	if len(stale) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := killCgroups(ctx, stale); err != nil {
		t.Logf("removing stale machines: %v", err)
		return
	}
	for _, cg := range stale {
		if err := removeCgroup(cg); err != nil {
			t.Logf("removing stale machine: %v", err)
			continue
		}
		t.Logf("removed stale machine cgroup %s", cg)
	}
}

// randomHex returns n random bytes in hex.
func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("reading random bytes: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// buffer is an io.Writer safe for concurrent use whose marked channel is
// closed once a marker line has been written.
type buffer struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	marker string
	marked chan struct{}
}

func newBuffer(marker string) *buffer {
	return &buffer{marker: marker, marked: make(chan struct{})}
}

func (b *buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	if b.marker != "" {
		if s := b.buf.String(); strings.HasPrefix(s, b.marker) || strings.Contains(s, "\n"+b.marker) {
			b.marker = ""
			close(b.marked)
		}
	}
	return len(p), nil
}

func (b *buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
