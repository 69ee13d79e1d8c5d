package jail

import (
	"errors"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// DropPrivileges makes the calling thread, and the program it executes
// next, an unprivileged process of uid and gid: no supplementary groups, an
// empty capability bounding set (so no later exec can regain a capability)
// and no_new_privs (so no set-user-ID program can either).
//
// The bounding set and no_new_privs belong to the thread: the caller must
// hold runtime.LockOSThread and exec from the same thread.
func DropPrivileges(uid, gid int) error {
	if uid == 0 || gid == 0 {
		return errors.New("refusing to run the kernel as root")
	}
	// Drop the bounding set while CAP_SETPCAP is still ours.
	for c := 0; ; c++ {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
			if errors.Is(err, unix.EINVAL) && c > 0 {
				break // past the last capability this kernel knows
			}
			return fmt.Errorf("dropping capability %d from the bounding set: %w", c, err)
		}
	}
	// syscall's setters act on every thread of the process.
	if err := syscall.Setgroups([]int{}); err != nil {
		return fmt.Errorf("clearing supplementary groups: %w", err)
	}
	if err := syscall.Setresgid(gid, gid, gid); err != nil {
		return fmt.Errorf("setting gid %d: %w", gid, err)
	}
	// Changing uid from 0 clears the permitted, effective and ambient sets.
	if err := syscall.Setresuid(uid, uid, uid); err != nil {
		return fmt.Errorf("setting uid %d: %w", uid, err)
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("setting no_new_privs: %w", err)
	}
	return nil
}
