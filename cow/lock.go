package cow

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"umlsd/internal/printable"
)

// LockHolder is the pid of a process whose fcntl lock on path conflicts
// with reading it, or with write, writing it; 0 if none. UML locks its
// images that way: COW files for writing, backing files for reading. An
// open file description lock, such as Merge's, has no process: its holder
// is -1.
func LockHolder(path string, write bool) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return lockHolder(f, write), nil
}

func lockHolder(f *os.File, write bool) int {
	lk := unix.Flock_t{Type: unix.F_RDLCK, Whence: io.SeekStart}
	if write {
		lk.Type = unix.F_WRLCK
	}
	if err := unix.FcntlFlock(f.Fd(), unix.F_GETLK, &lk); err != nil || lk.Type == unix.F_UNLCK {
		return 0
	}
	return int(lk.Pid)
}

// InUseError is the error for a file another process holds a lock on.
type InUseError struct {
	Role string // "COW file" or "backing file"
	Path string
	PID  int // -1: an open file description lock, which has no process
}

func (e *InUseError) Error() string {
	path := printable.Line(e.Path) // it may come from a COW header
	if e.PID <= 0 {
		return fmt.Sprintf("%s %s is in use by another program (another merge?); wait for it to finish", e.Role, path)
	}
	return fmt.Sprintf("%s %s is in use by process %d (a running guest?); stop the guest first (umlctl stop NAME)", e.Role, path, e.PID)
}

// lockFile takes an open file description lock on all of f, without
// waiting: it conflicts with the kernel's process-associated locks, and,
// unlike those, closing another descriptor of the same file in this process
// does not drop it. It goes with f's last descriptor.
func lockFile(f *os.File, role string, write bool) error {
	lk := unix.Flock_t{Type: unix.F_RDLCK, Whence: io.SeekStart}
	if write {
		lk.Type = unix.F_WRLCK
	}
	err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk)
	if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
		return &InUseError{Role: role, Path: f.Name(), PID: lockHolder(f, write)}
	}
	if err != nil {
		return fmt.Errorf("locking %s %s: %w", role, printable.Line(f.Name()), err)
	}
	return nil
}
