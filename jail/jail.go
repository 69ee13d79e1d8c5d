// Package jail builds the file system a guest kernel sees and takes away
// what the kernel's process may do on the host.
//
// A jail is made in a fresh, private mount namespace (the caller starts the
// process that enters it with CLONE_NEWNS): nothing mounted here is visible
// on the host, and it all goes away with the last process of the namespace,
// even after SIGKILL. Its root is a read-only tmpfs holding only mount points
// for what the kernel needs, each bound in from the host at the same
// absolute path: a guest reboot re-executes argv[0], and a COW file records
// its backing file's path.
package jail

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Mount is one thing the kernel sees: a host file or directory bound in at
// Target, or (with no Source) a fresh tmpfs.
type Mount struct {
	Target   string // absolute, as the kernel sees it
	Source   string // host path to bind; "" for a tmpfs
	ReadOnly bool   // for a bind

	// For a tmpfs: its size and inode limits, the mode and owner of its
	// root, and whether programs (and executable mappings) may come from it.
	Size     uint64
	Inodes   uint64
	Mode     fs.FileMode
	UID, GID int
	Exec     bool
}

// Spec is a jail.
type Spec struct {
	// Root is the host directory the jail's root is mounted on; "" means
	// no chroot: the mounts are made at their targets in the host's tree,
	// in the private namespace.
	Root   string
	Mounts []Mount
}

// rootSize is the size of the jail's root tmpfs: it holds only directories
// and empty mount points.
const rootSize = 1 << 20

// Enter builds the jail described by s and, if it has a root, changes the
// calling process's root to it. It must run as root in a private mount
// namespace.
func Enter(s Spec) error {
	// Detach a copy of each source first: a tmpfs mounted later may cover
	// the source's host path (with no root, the runtime directory).
	trees := make([]tree, len(s.Mounts))
	defer func() {
		for _, t := range trees {
			if t.fd > 0 {
				unix.Close(t.fd)
			}
		}
	}()
	for i, m := range s.Mounts {
		if m.Source == "" {
			continue
		}
		t, err := detach(m)
		if err != nil {
			return err
		}
		trees[i] = t
	}
	// Mount points are made only in file systems the jail mounted itself.
	var ours []string
	if s.Root != "" {
		opts := "size=" + strconv.Itoa(rootSize) + ",mode=0755"
		if err := unix.Mount("tmpfs", s.Root, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, opts); err != nil {
			return fmt.Errorf("mounting the jail's root on %s: %w", s.Root, err)
		}
		ours = append(ours, s.Root)
	}
	for i, m := range s.Mounts {
		target := filepath.Join(s.Root, m.Target)
		if err := mountpoint(ours, target, m.Source == "" || trees[i].isDir); err != nil {
			return err
		}
		if m.Source == "" {
			if err := mountTmpfs(target, m); err != nil {
				return err
			}
			ours = append(ours, target)
			continue
		}
		if err := unix.MoveMount(trees[i].fd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
			return fmt.Errorf("binding %s at %s: %w", m.Source, m.Target, err)
		}
	}
	if s.Root == "" {
		return nil
	}
	flags := uintptr(unix.MS_REMOUNT | unix.MS_BIND | unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	if err := unix.Mount("", s.Root, "", flags, ""); err != nil {
		return fmt.Errorf("making the jail's root read-only: %w", err)
	}
	if err := unix.Chroot(s.Root); err != nil {
		return fmt.Errorf("changing root to %s: %w", s.Root, err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("changing to the jail's root: %w", err)
	}
	return nil
}

// tree is a detached copy of a bind mount's source.
type tree struct {
	fd    int
	isDir bool
}

// detach makes an unattached copy of m's source with m's flags.
func detach(m Mount) (tree, error) {
	fi, err := os.Stat(m.Source)
	if err != nil {
		return tree{}, fmt.Errorf("binding %s into the jail: %w", m.Source, err)
	}
	fd, err := unix.OpenTree(unix.AT_FDCWD, m.Source, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return tree{}, fmt.Errorf("opening %s to bind it into the jail: %w", m.Source, err)
	}
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
	// A block device given as an image is opened through its node.
	if fi.Mode()&fs.ModeDevice != 0 {
		attr.Attr_set &^= unix.MOUNT_ATTR_NODEV
	}
	if m.ReadOnly {
		attr.Attr_set |= unix.MOUNT_ATTR_RDONLY
	}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		unix.Close(fd)
		return tree{}, fmt.Errorf("setting the flags of %s: %w", m.Source, err)
	}
	return tree{fd: fd, isDir: fi.IsDir()}, nil
}

func mountTmpfs(target string, m Mount) error {
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV)
	if !m.Exec {
		flags |= unix.MS_NOEXEC
	}
	opts := fmt.Sprintf("size=%d,nr_inodes=%d,mode=%04o,uid=%d,gid=%d", m.Size, m.Inodes, m.Mode.Perm(), m.UID, m.GID)
	if err := unix.Mount("tmpfs", target, "tmpfs", flags, opts); err != nil {
		return fmt.Errorf("mounting a tmpfs on %s: %w", target, err)
	}
	return nil
}

// mountpoint makes sure target exists, a directory or a file: below one of
// ours it creates it (and its parents); elsewhere, it must exist.
func mountpoint(ours []string, target string, isDir bool) error {
	if _, err := os.Lstat(target); err == nil {
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) || !below(target, ours) {
		return fmt.Errorf("finding the mount point %s: %w", target, err)
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return fmt.Errorf("making the mount point %s: %w", target, err)
	}
	if isDir {
		if err := os.Mkdir(target, 0o755); err != nil {
			return fmt.Errorf("making the mount point %s: %w", target, err)
		}
		return nil
	}
	f, err := os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("making the mount point %s: %w", target, err)
	}
	return f.Close()
}

func below(path string, dirs []string) bool {
	for _, d := range dirs {
		if strings.HasPrefix(path, d+"/") {
			return true
		}
	}
	return false
}
