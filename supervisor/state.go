package supervisor

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// A record says what a supervisor created for a guest, one JSON object per
// line, each written before the thing it names is created: whoever cleans
// up after a crash (uml-supervisor cleanup) undoes exactly that, newest
// first. A half-written last line is the crash itself and is ignored.
type record struct {
	Path     string     `json:"path,omitempty"`     // a file or empty directory
	Kernel   *proc      `json:"kernel,omitempty"`   // the kernel's process group
	Firewall string     `json:"firewall,omitempty"` // the guest whose firewall it is
	Tap      *tapRecord `json:"tap,omitempty"`
}

// proc names a process beyond its pid, which the system reuses.
type proc struct {
	PID   int    `json:"pid"`
	Start uint64 `json:"start"` // start time, clock ticks after boot
}

// stateFile is the open, locked record of a guest.
type stateFile struct {
	f *os.File
}

// errLocked means another supervisor holds the guest's record.
var errLocked = errors.New("locked")

// openState opens (or with create, creates) the record at path and locks
// it; a record another live supervisor holds gives errLocked.
func openState(path string, create bool) (*stateFile, error) {
	flags := os.O_RDWR | os.O_APPEND
	if create {
		flags |= os.O_CREATE
	}
	f, err := os.OpenFile(path, flags|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, errLocked
		}
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	// The holder before us may have removed the record (release) between
	// our open and our lock: a lock on that file guards nothing.
	var held, now unix.Stat_t
	if unix.Fstat(int(f.Fd()), &held) != nil || unix.Stat(path, &now) != nil || held.Ino != now.Ino || held.Dev != now.Dev {
		f.Close()
		return nil, errLocked
	}
	return &stateFile{f: f}, nil
}

// add records r, before the caller creates what it names.
func (s *stateFile) add(r record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if _, err := s.f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("recording %s: %w", b, err)
	}
	return nil
}

// records reads back every complete record.
func (s *stateFile) records() ([]record, error) {
	if _, err := s.f.Seek(0, 0); err != nil {
		return nil, err
	}
	var rs []record
	sc := bufio.NewScanner(s.f)
	for sc.Scan() {
		var r record
		if json.Unmarshal(sc.Bytes(), &r) == nil {
			rs = append(rs, r)
		}
	}
	return rs, sc.Err()
}

func (s *stateFile) close() error { return s.f.Close() }

// processStart is the start time of pid, or an error if it is gone.
func processStart(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces and parentheses: fields start after
	// the last ")". starttime is field 22; the remainder starts at field 3.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("parsing /proc/%d/stat", pid)
	}
	fields := strings.Fields(s[i+1:])
	if len(fields) < 20 {
		return 0, fmt.Errorf("parsing /proc/%d/stat", pid)
	}
	return strconv.ParseUint(fields[19], 10, 64)
}

// alive reports whether p is still the process it was recorded as.
func (p proc) alive() bool {
	start, err := processStart(p.PID)
	return err == nil && start == p.Start
}

// killGroup kills p's whole process group (a UML kernel is several host
// processes, and its main process alone orphans the others) and waits,
// up to timeout, until p is gone. It never signals a process group whose
// leader is no longer p.
func killGroup(p proc, timeout time.Duration) error {
	pidfd, err := unix.PidfdOpen(p.PID, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("opening kernel process %d: %w", p.PID, err)
	}
	defer unix.Close(pidfd)
	// Checked after pidfd_open, so that the pidfd tells this process's
	// exit, not that of a later process with its pid.
	if !p.alive() {
		return nil
	}
	if err := unix.Kill(-p.PID, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("killing kernel process group %d: %w", p.PID, err)
	}
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, int(timeout.Milliseconds()))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("waiting for kernel process %d: %w", p.PID, err)
		}
		if n == 0 {
			return fmt.Errorf("kernel process %d is still there %v after SIGKILL", p.PID, timeout)
		}
		return nil
	}
}

// undo removes what the records name, newest first. Things already gone
// are fine; a directory that is not empty is left (it holds something the
// supervisor did not create) and reported.
func undo(ctx context.Context, hn HostNetwork, rs []record) error {
	var errs []error
	tapLeft := false
	for i := len(rs) - 1; i >= 0; i-- {
		r := rs[i]
		switch {
		case r.Kernel != nil:
			if err := killGroup(*r.Kernel, 5*time.Second); err != nil {
				errs = append(errs, err)
			}
		case r.Firewall != "" || r.Tap != nil:
			if err := undoNetwork(ctx, hn, r, &tapLeft); err != nil {
				errs = append(errs, err)
			}
		case r.Path != "":
			if err := os.Remove(r.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("removing %s: %w", r.Path, err))
			}
		}
	}
	return errors.Join(errs...)
}
