package testbed

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cgroupBase is the directory, under the root of each cgroup hierarchy that
// systemd-nspawn uses, that holds one cgroup per machine.
//
// Each machine needs its own cgroup: with --keep-unit, systemd-nspawn moves
// itself into "<own cgroup>/supervisor" and the container into
// "<own cgroup>/payload". Two machines started from the same cgroup would
// share "payload", and the systemd of one would manage (and kill) the
// processes of the other.
const cgroupBase = "umlsd-testbed"

// cgroupRoots returns the mount points of the cgroup hierarchies that
// systemd-nspawn places the container in: the unified (v2) hierarchy and, on
// a legacy or hybrid host, the named v1 hierarchy "name=systemd".
func cgroupRoots() ([]string, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("reading mount table: %w", err)
	}
	var roots []string
	for line := range strings.Lines(string(data)) {
		// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
		pre, post, ok := strings.Cut(strings.TrimSpace(line), " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(g) < 3 {
			continue
		}
		switch {
		case g[0] == "cgroup2":
			roots = append(roots, unescapeMountinfo(f[4]))
		case g[0] == "cgroup" && strings.Contains(","+g[2]+",", ",name=systemd,"):
			roots = append(roots, unescapeMountinfo(f[4]))
		}
	}
	if len(roots) == 0 {
		return nil, errors.New("finding cgroup hierarchies: neither cgroup2 nor name=systemd is mounted")
	}
	return roots, nil
}

// unescapeMountinfo undoes the octal escapes (\040 for a space) of a path in
// /proc/self/mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// procStartTime returns the start time of a process (field 22 of
// /proc/PID/stat, in clock ticks since boot). Together with the PID it
// identifies a process even after its PID has been reused.
func procStartTime(pid int) (uint64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may contain spaces and parentheses: the
	// fields after it start after the last ')'.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, fmt.Errorf("parsing /proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(string(data[i+1:]))
	// f[0] is field 3 (state); field 22 is f[19].
	if len(f) < 20 {
		return 0, fmt.Errorf("parsing /proc/%d/stat: %d fields", pid, len(f)+2)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// procParent returns the parent PID and the state letter of a process.
func procParent(pid int) (ppid int, state byte, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("parsing /proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 2 || len(f[0]) != 1 {
		return 0, 0, fmt.Errorf("parsing /proc/%d/stat: too short", pid)
	}
	ppid, err = strconv.Atoi(f[1])
	return ppid, f[0][0], err
}

// alive reports whether the process with this PID and start time exists.
func alive(pid int, start uint64) bool {
	s, err := procStartTime(pid)
	return err == nil && s == start
}

// machineID names a machine's cgroups: "<owner pid>-<owner start time>-<random>".
// The owner is the test process; once it is gone, the machine is stale.
func machineID(suffix string) (string, error) {
	pid := os.Getpid()
	start, err := procStartTime(pid)
	if err != nil {
		return "", fmt.Errorf("reading own start time: %w", err)
	}
	return fmt.Sprintf("%d-%d-%s", pid, start, suffix), nil
}

// parseMachineID returns the owner of a machine named by machineID.
func parseMachineID(id string) (pid int, start uint64, ok bool) {
	f := strings.Split(id, "-")
	if len(f) != 3 || f[2] == "" {
		return 0, 0, false
	}
	pid, err1 := strconv.Atoi(f[0])
	start, err2 := strconv.ParseUint(f[1], 10, 64)
	return pid, start, err1 == nil && err2 == nil && pid > 0
}

// createCgroup creates <root>/umlsd-testbed/<id>. A concurrent teardown may
// remove the (then empty) base directory between the two mkdirs: retry.
func createCgroup(root, id string) (string, error) {
	base := filepath.Join(root, cgroupBase)
	dir := filepath.Join(base, id)
	var err error
	for range 10 {
		if err = os.Mkdir(base, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			break
		}
		if err = os.Mkdir(dir, 0o755); !errors.Is(err, fs.ErrNotExist) {
			break
		}
	}
	if err != nil {
		return "", fmt.Errorf("creating cgroup: %w", err)
	}
	return dir, nil
}

// cgroupPIDs returns the processes in a cgroup and all its descendants.
func cgroupPIDs(dir string) ([]int, error) {
	var pids []int
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.IsDir() {
			return nil
		}
		f, err := os.Open(filepath.Join(path, "cgroup.procs"))
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		defer f.Close()
		s := bufio.NewScanner(f)
		for s.Scan() {
			if pid, err := strconv.Atoi(strings.TrimSpace(s.Text())); err == nil && pid > 0 {
				pids = append(pids, pid)
			}
		}
		return s.Err()
	})
	return pids, err
}

// killCgroups SIGKILLs every process in the cgroups and their descendants
// until they are empty. Killing the container's PID 1 kills everything in its
// PID namespace; once no process is left, its mount namespace (and with it the
// overlay) is gone.
func killCgroups(ctx context.Context, dirs []string) error {
	self := os.Getpid()
	for {
		var all []int
		for _, dir := range dirs {
			// cgroup.kill (cgroup v2, Linux 5.14) kills the whole subtree at once.
			if err := writeExisting(filepath.Join(dir, "cgroup.kill"), "1"); err != nil &&
				!errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("killing cgroup %s: %w", dir, err)
			}
			pids, err := cgroupPIDs(dir)
			if err != nil {
				return fmt.Errorf("listing processes of cgroup %s: %w", dir, err)
			}
			all = append(all, pids...)
		}
		if len(all) == 0 {
			return nil
		}
		for _, pid := range all {
			if pid != self {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("killing processes %v: %w", all, context.Cause(ctx))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// writeExisting writes to a file that must exist (a cgroup control file):
// unlike os.WriteFile it never creates one.
func writeExisting(path, data string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// removeCgroup removes a cgroup and its descendants, deepest first. The
// cgroups must be empty. It is not an error if the cgroup does not exist.
func removeCgroup(dir string) error {
	var dirs []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, path)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("listing cgroup %s: %w", dir, err)
	}
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	for _, d := range dirs {
		// rmdir, never a recursive remove: cgroupfs only allows rmdir, and
		// this can never delete anything but an empty cgroup.
		if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
			return fmt.Errorf("removing cgroup %s: %w", d, err)
		}
	}
	return nil
}

// removeCgroupBase removes the (empty) umlsd-testbed directory of a hierarchy.
// It fails harmlessly (EBUSY, ENOTEMPTY) while another machine exists.
func removeCgroupBase(root string) {
	_ = syscall.Rmdir(filepath.Join(root, cgroupBase))
}

// staleMachines returns the cgroups of machines whose owning test process is
// gone: left behind by a test binary that died before it could clean up.
func staleMachines(roots []string) []string {
	var stale []string
	for _, root := range roots {
		base := filepath.Join(root, cgroupBase)
		entries, err := os.ReadDir(base)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if !e.IsDir() {
				continue
			}
			pid, start, ok := parseMachineID(e.Name())
			if ok && !alive(pid, start) {
				stale = append(stale, filepath.Join(base, e.Name()))
			}
		}
	}
	return stale
}
