// Package guestimage builds small, reproducible ext4 root file systems for
// User-Mode Linux guests: a static busybox as init and shell, a generated
// inittab and rc scripts, and whatever host programs and files a Spec asks
// for. The project's tests and its demo boot them with /usr/bin/linux.uml.
//
// # Building without privileges
//
// The tree is staged in a temporary directory and turned into an image by
// `mke2fs -t ext4 -d`, with no root, loop device or mount. What mke2fs copies
// from the host and the host does not let an unprivileged user choose (each
// inode's ctime and owner) is then set by a `debugfs -w` script, which also
// adds /dev/console and /dev/null (devtmpfs covers them at boot; they are
// there for a kernel that does not mount it).
//
// # Reproducibility
//
// Two builds of the same Spec on the same host give byte-identical images,
// whichever user builds them under whichever umask:
// every time stamp is Epoch (staged mtimes and atimes, E2FSPROGS_FAKE_TIME
// for mke2fs and debugfs, ctimes by debugfs); every owner is root; mke2fs
// gets its own configuration file and a scrubbed environment, so neither
// /etc/mke2fs.conf nor MKE2FS_* variables leak in; the file system UUID and
// directory hash seed are derived from a digest of the staged tree; and
// mke2fs adds directory entries in sorted order. The image's own mtime is
// deliberately not fixed: a UML COW file records its backing file's size and
// mtime, and only a changed mtime tells it that the content changed. Build
// therefore leaves an existing dst alone when it already has exactly the new
// content, so COW files made on it stay valid.
//
// # Boot and shutdown
//
// busybox init runs /etc/init.d/rcS (mounts /proc, /sys, /dev, /dev/pts,
// /dev/shm, /tmp and /run, remounts / read-write unless the kernel command
// line says "ro", sets the hostname, brings lo up, then runs Spec.Startup),
// then respawns Spec.Services. Their output goes to /dev/console, the UML
// console con0.
//
// busybox init disables the kernel's Ctrl-Alt-Del reboot, so UML's mconsole
// `cad` makes the kernel send SIGINT to init, which runs the inittab
// "ctrlaltdel" action and waits for it, respawning nothing meanwhile. With
// CtrlAltDel Poweroff that is `/etc/init.d/rcK poweroff`: Spec.Shutdown, SIGTERM to every other process
// (SIGKILL after 3 s), sync, / remounted read-only (which flushes the
// journal and marks the file system clean) and the other file systems
// unmounted, then `poweroff -f`: the UML kernel exits with status 0 about
// 0.15 s after the cad, Shutdown's own time aside. (UML registers no power-off
// handler, so the kernel turns the power-off into a halt and prints "reboot:
// System halted"; the exit status is 0 either way.) A poweroff, reboot or halt
// from inside the guest takes init's own path, with rcK (no argument) as its
// "shutdown" action, and takes about 2 s more: init pauses twice for a
// second.
package guestimage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// DefaultSize is the image size when Spec.Size is 0.
const DefaultSize = 64 << 20

// DefaultBusybox is the busybox installed when Spec.Busybox is empty:
// Debian's busybox-static.
const DefaultBusybox = "/bin/busybox"

// Epoch is every time stamp in an image, in Unix seconds
// (2024-01-01T00:00:00Z): file times, and the file system's creation and
// last-write times.
const Epoch = 1704067200

// Spec describes a root file system image.
type Spec struct {
	// Size is the image size in bytes, a multiple of 4096; 0 means
	// DefaultSize.
	Size int64
	// Busybox is the busybox binary to install as /bin/busybox, with a
	// symbolic link for each of its applets; empty means DefaultBusybox.
	// A dynamically linked one gets its libraries, as Programs do.
	Busybox string
	// Hostname is the guest's host name; empty leaves the kernel's.
	Hostname string
	// Programs are absolute paths of host programs, each copied to the same
	// path in the image with every library ldd lists for it, the dynamic
	// loader included. Symbolic links are followed for the content; the
	// path stays the one given (or the one the loader uses).
	Programs []string
	// Files are extra files, written last: they replace generated files
	// and applet links at the same path.
	Files []File
	// Startup holds shell commands that rcS runs at boot, after /proc,
	// /sys, /dev, /tmp and /run are mounted and / is made writable, and
	// before Services start.
	Startup string
	// Services are shell commands that init starts after Startup and
	// restarts whenever they exit (inittab "respawn").
	Services []string
	// Shutdown holds shell commands run first on shutdown, while every
	// process still runs and the root file system is still writable. Keep
	// them short: a host that stops the guest waits only so long.
	Shutdown string
	// CtrlAltDel says what Ctrl-Alt-Del (mconsole cad) does.
	CtrlAltDel CtrlAltDel
}

// File is an extra file in the image.
type File struct {
	// Path is absolute and clean. Missing parent directories are made with
	// mode 0755.
	Path string
	// Mode holds the permission bits (0 means 0644 for a file and 0755 for
	// a directory), setuid, setgid and sticky bits, and the type:
	// fs.ModeDir for a directory, fs.ModeSymlink for a symbolic link whose
	// target is Data, none for a regular file.
	Mode fs.FileMode
	Data []byte
}

// CtrlAltDel is what init does on Ctrl-Alt-Del, which is what UML's
// mconsole `cad` sends.
type CtrlAltDel int

const (
	// Poweroff shuts the guest down cleanly and powers it off: the UML
	// kernel exits with status 0.
	Poweroff CtrlAltDel = iota
	// Ignore does nothing.
	Ignore
	// Reboot shuts the guest down cleanly and reboots it (the UML kernel
	// re-executes itself, or exits with status 0 given `noreboot`).
	Reboot
)

func (c CtrlAltDel) String() string {
	switch c {
	case Poweroff:
		return "poweroff"
	case Ignore:
		return "ignore"
	case Reboot:
		return "reboot"
	}
	return fmt.Sprintf("CtrlAltDel(%d)", int(c))
}

// Build writes the image described by spec to dst. It writes a temporary
// file next to dst and renames it, so dst is either the old file or the
// complete new image; if dst already holds exactly the new image it is left
// untouched, mtime included. It needs mke2fs and debugfs (e2fsprogs), ldd for
// Programs, and no privileges.
func Build(ctx context.Context, dst string, spec Spec) error {
	spec, err := spec.withDefaults()
	if err != nil {
		return err
	}
	tree, err := assemble(ctx, spec)
	if err != nil {
		return err
	}
	stage, err := os.MkdirTemp("", "guestimage-*")
	if err != nil {
		return fmt.Errorf("creating the staging directory: %w", err)
	}
	defer os.RemoveAll(stage)
	digest, err := tree.materialize(stage)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return fmt.Errorf("creating the image: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // fails harmlessly after the rename
	err = f.Truncate(spec.Size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sizing the image %s: %w", tmp, err)
	}
	if err := makeFS(ctx, tmp, stage, spec.Size, digest, tree.debugfsScript()); err != nil {
		return err
	}
	if same, err := sameContent(tmp, dst); err != nil {
		return err
	} else if same {
		return nil
	}
	if err := os.Chmod(tmp, 0o644); err != nil {
		return fmt.Errorf("setting the image's mode: %w", err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("installing the image: %w", err)
	}
	return nil
}

// withDefaults fills in defaults and checks what can be checked without
// touching the host.
func (spec Spec) withDefaults() (Spec, error) {
	if spec.Size == 0 {
		spec.Size = DefaultSize
	}
	if spec.Size < 0 || spec.Size%blockSize != 0 {
		return spec, fmt.Errorf("image size %d: must be a positive multiple of %d", spec.Size, blockSize)
	}
	if spec.Busybox == "" {
		spec.Busybox = DefaultBusybox
	}
	if err := checkHostname(spec.Hostname); err != nil {
		return spec, err
	}
	for _, p := range spec.Programs {
		if !path.IsAbs(p) || path.Clean(p) != p {
			return spec, fmt.Errorf("program %q: the path must be absolute and clean", p)
		}
	}
	for i, s := range spec.Services {
		if strings.TrimSpace(s) == "" {
			return spec, fmt.Errorf("service %d is empty", i+1)
		}
	}
	switch spec.CtrlAltDel {
	case Poweroff, Ignore, Reboot:
	default:
		return spec, fmt.Errorf("unknown CtrlAltDel value %d", int(spec.CtrlAltDel))
	}
	seen := map[string]bool{}
	for _, f := range spec.Files {
		if err := checkImagePath(f.Path); err != nil {
			return spec, fmt.Errorf("file %q: %w", f.Path, err)
		}
		if seen[f.Path] {
			return spec, fmt.Errorf("file %q is given twice", f.Path)
		}
		seen[f.Path] = true
		switch f.Mode.Type() {
		case 0, fs.ModeSymlink:
		case fs.ModeDir:
			if len(f.Data) > 0 {
				return spec, fmt.Errorf("file %q is a directory with data", f.Path)
			}
		default:
			return spec, fmt.Errorf("file %q: unsupported type %v (regular files, directories and symbolic links only)", f.Path, f.Mode.Type())
		}
	}
	return spec, nil
}

// checkImagePath accepts absolute, clean paths other than "/" with no NUL or
// newline, which the debugfs script could not quote.
func checkImagePath(p string) error {
	switch {
	case !path.IsAbs(p) || path.Clean(p) != p:
		return errors.New("the path must be absolute and clean")
	case p == "/":
		return errors.New("cannot replace the root directory")
	case strings.ContainsAny(p, "\x00\n"):
		return errors.New("the path contains a NUL or newline")
	}
	return nil
}

// checkHostname accepts what sethostname(2) and a resolver accept: up to 64
// bytes of dot-separated labels of letters, digits and hyphens.
func checkHostname(h string) error {
	if h == "" {
		return nil
	}
	if len(h) > 64 {
		return fmt.Errorf("host name %q is longer than 64 bytes", h)
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || strings.HasPrefix(label, "-") || strings.HasSuffix(label, "-") {
			return fmt.Errorf("host name %q: empty label or label starting or ending with a hyphen", h)
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return fmt.Errorf("host name %q: only letters, digits, hyphens and dots are allowed", h)
			}
		}
	}
	return nil
}
