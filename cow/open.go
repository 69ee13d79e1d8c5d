package cow

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"

	"umlsd/internal/printable"
)

// openRegular opens path, a COW or backing file (role says which), with
// flag, only if it is a regular file. A COW header can name any path: a
// FIFO would block the open forever, a device would be opened as root with
// its side effects. So path is checked before it is opened, opened without
// blocking or taking a controlling terminal, and the open file checked again
// to be the same regular file, in case path changed in between.
func openRegular(path, role string, flag int) (*os.File, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, printablePath(err)
	}
	if !fi.Mode().IsRegular() {
		return nil, notRegular(role, path, fi.Mode())
	}
	f, err := os.OpenFile(path, flag|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, printablePath(err)
	}
	ofi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, printablePath(err)
	}
	if !ofi.Mode().IsRegular() {
		f.Close()
		return nil, notRegular(role, path, ofi.Mode())
	}
	if !os.SameFile(fi, ofi) {
		f.Close()
		return nil, fmt.Errorf("%s %s was replaced by another file while it was being opened; make sure nothing changes it and try again", role, printable.Line(path))
	}
	return f, nil
}

// notRegular is the error for a COW or backing file of another type.
func notRegular(role, path string, mode fs.FileMode) error {
	return fmt.Errorf("%s %s is %s, not a regular file, so it is not opened; name a regular file instead", role, printable.Line(path), typeName(mode))
}

// typeName names the type of a file that is not a regular one.
func typeName(mode fs.FileMode) string {
	switch {
	case mode.IsDir():
		return "a directory"
	case mode&fs.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case mode&fs.ModeSocket != 0:
		return "a socket"
	case mode&fs.ModeCharDevice != 0:
		return "a character device"
	case mode&fs.ModeDevice != 0:
		return "a block device"
	case mode&fs.ModeSymlink != 0:
		return "a symbolic link"
	default:
		return "a special file"
	}
}

// printablePath makes the path of a *fs.PathError printable: it may come
// from a COW header, which the guest wrote.
func printablePath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return &fs.PathError{Op: pe.Op, Path: printable.Line(pe.Path), Err: pe.Err}
	}
	return err
}

// SameFile says whether a and b name the same file: the same path, or
// paths that resolve to the same file.
func SameFile(a, b string) bool {
	if a == "" || b == "" {
		return false
	}
	if a == b {
		return true
	}
	fa, errA := os.Stat(a)
	fb, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(fa, fb)
}
