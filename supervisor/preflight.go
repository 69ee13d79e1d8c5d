package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/coreos/go-systemd/v22/journal"
	"golang.org/x/sys/unix"

	"umlsd/config"
	"umlsd/cow"
	"umlsd/jail"
	"umlsd/netprep"
)

// Memory the guest's memory tmpfs has beyond the guest's RAM: UML maps a
// little more than mem= (uml-facts.md, "Memory").
const memorySlack = 32 << 20

// runtimeSize is the size of the tmpfs the kernel sees at its runtime
// directory: its umid directory, pid file and management console socket.
const runtimeSize = 1 << 20

// plan is everything a start needs, found by preflight before anything on
// the host is changed.
type plan struct {
	guest    *config.Guest
	account  Account
	layout   Layout
	argv     []string
	env      []string
	jail     jail.Spec
	makeCow  bool   // the COW file does not exist yet
	stateDir string // the default COW file's directory, to create if missing
	rules    netprep.RuleSet
}

// configError is a problem with the configuration or the host that a
// restart cannot fix: the unit's restart policy does not retry it.
type configError struct{ err error }

func (e configError) Error() string { return e.err.Error() }
func (e configError) Unwrap() error { return e.err }

func hostErrorf(format string, args ...any) error {
	return configError{fmt.Errorf(format, args...)}
}

// preflight checks what a start needs, changing nothing but the account
// database (the default account is created on first start), and plans the
// start.
// others are the other configured guests; lookup resolves the host names
// of firewall rules.
func preflight(ctx context.Context, db accounts, g *config.Guest, others []*config.Guest, l Layout, log Log, lookup netprep.Lookup) (*plan, error) {
	acct, created, err := resolveAccount(ctx, db, g)
	if err != nil {
		return nil, err
	}
	if err := checkShared(db, g, acct, others); err != nil {
		return nil, err
	}
	if created {
		log.Event(journal.PriNotice, fmt.Sprintf("created the guest's system account %s (uid %d)", acct.User, acct.UID))
	}
	p := &plan{guest: g, account: acct, layout: l, argv: KernelCommandLine(g, l)}
	p.env = []string{"TMPDIR=" + l.Memory()}
	if g.Network != nil {
		if p.rules, err = preflightNetwork(ctx, g, lookup, log); err != nil {
			return nil, err
		}
	}

	// Checked before its ELF header is read: a FIFO would block that.
	if fi, err := os.Stat(g.Kernel); err != nil || !fi.Mode().IsRegular() {
		return nil, hostErrorf("Kernel=%s is not a program file; install user-mode-linux or fix Kernel=", g.Kernel)
	}
	if err := checkAccess(g.Kernel, acct, unix.X_OK|unix.R_OK, g.Chroot); err != nil {
		return nil, hostErrorf("Kernel=%s: %w", g.Kernel, err)
	}
	files, err := jail.ProgramFiles(g.Kernel)
	if err != nil {
		return nil, hostErrorf("Kernel=%s cannot be run: %w", g.Kernel, err)
	}
	// The root image is written only when there is no COW file.
	imageAccess := uint32(unix.R_OK)
	if g.Cow == "" {
		imageAccess |= unix.W_OK
	}
	if err := checkImage("RootImage", g.RootImage, acct, imageAccess, g.Chroot); err != nil {
		return nil, err
	}
	for _, d := range g.Disks {
		mode := uint32(unix.R_OK | unix.W_OK)
		if d.ReadOnly {
			mode = unix.R_OK
		}
		if err := checkImage("Disk", d.Path, acct, mode, g.Chroot); err != nil {
			return nil, err
		}
	}
	if g.Cow != "" {
		if p.makeCow, err = checkCow(g, acct); err != nil {
			return nil, err
		}
		if dir := filepath.Dir(g.Cow); dir == filepath.Join(config.StateDir, g.Name) {
			p.stateDir = dir
		}
	}

	var mounts []jail.Mount
	if g.Chroot {
		for _, f := range files {
			mounts = append(mounts, jail.Mount{Target: f, Source: f, ReadOnly: true})
		}
		mounts = append(mounts, jail.Mount{Target: g.RootImage, Source: g.RootImage, ReadOnly: g.Cow != ""})
		for _, d := range g.Disks {
			mounts = append(mounts, jail.Mount{Target: d.Path, Source: d.Path, ReadOnly: d.ReadOnly})
		}
		if g.Cow != "" {
			mounts = append(mounts, jail.Mount{Target: g.Cow, Source: g.Cow})
		}
		p.jail.Root = l.Jail()
	}
	p.jail.Mounts = append(mounts,
		// Inode limits too: a tmpfs's size does not count them.
		jail.Mount{Target: l.Dir, Size: runtimeSize, Inodes: 64, Mode: 0o700, UID: acct.UID, GID: acct.GID},
		jail.Mount{Target: l.Notify(), Source: l.Notify()},
		jail.Mount{Target: l.Memory(), Size: g.Memory + memorySlack, Inodes: 64, Mode: 0o700, UID: acct.UID, GID: acct.GID, Exec: true},
	)
	return p, nil
}

func checkImage(key, path string, acct Account, mode uint32, chroot bool) error {
	fi, err := os.Stat(path)
	if err != nil {
		return hostErrorf("%s=%s: %w", key, path, unwrapPath(err))
	}
	if !fi.Mode().IsRegular() && fi.Mode()&fs.ModeDevice == 0 {
		return hostErrorf("%s=%s is not a file or a block device", key, path)
	}
	if err := checkAccess(path, acct, mode, chroot); err != nil {
		return hostErrorf("%s=%s: %w", key, path, err)
	}
	if holder := lockHolder(path, mode&unix.W_OK != 0); holder != 0 {
		return hostErrorf("%s=%s is in use by process %d (another UML kernel?); stop it first", key, path, holder)
	}
	return nil
}

// checkCow checks an existing COW file against its backing file, as the
// kernel will at boot, and reports whether the file is still to be made.
func checkCow(g *config.Guest, acct Account) (bool, error) {
	fi, err := os.Stat(g.Cow)
	if errors.Is(err, fs.ErrNotExist) {
		dir := filepath.Dir(g.Cow)
		if dir != filepath.Join(config.StateDir, g.Name) {
			if _, err := os.Stat(dir); err != nil {
				return false, hostErrorf("Cow=%s: its directory: %w", g.Cow, unwrapPath(err))
			}
		}
		return true, nil
	}
	if err != nil {
		return false, hostErrorf("Cow=%s: %w", g.Cow, unwrapPath(err))
	}
	if !fi.Mode().IsRegular() {
		return false, hostErrorf("Cow=%s is not a regular file", g.Cow)
	}
	if err := checkAccess(g.Cow, acct, unix.R_OK|unix.W_OK, g.Chroot); err != nil {
		return false, hostErrorf("Cow=%s: %w", g.Cow, err)
	}
	h, err := cow.Read(g.Cow)
	if err != nil {
		return false, hostErrorf("Cow=%s is not a usable COW file: %w", g.Cow, err)
	}
	if h.Backing != g.RootImage && !sameFile(h.Backing, g.RootImage) {
		return false, hostErrorf("COW file %s was made for backing file %s, not RootImage=%s; set RootImage= to that file, or move the COW file away to start afresh", g.Cow, h.Backing, g.RootImage)
	}
	bfi, err := os.Stat(g.RootImage)
	if err != nil {
		return false, hostErrorf("RootImage=%s: %w", g.RootImage, unwrapPath(err))
	}
	if err := h.Matches(bfi); err != nil {
		return false, configError{err}
	}
	if holder := lockHolder(g.Cow, true); holder != 0 {
		return false, hostErrorf("COW file %s is in use by process %d (another UML kernel?); stop it first", g.Cow, holder)
	}
	return false, nil
}

func sameFile(a, b string) bool {
	fa, errA := os.Stat(a)
	fb, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(fa, fb)
}

// lockHolder is the pid of a process whose lock (UML locks its images:
// COW files for writing, backing files for reading) conflicts with
// reading, or with write, writing path; 0 if none.
func lockHolder(path string, write bool) int {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	lk := unix.Flock_t{Type: unix.F_RDLCK, Whence: 0}
	if write {
		lk.Type = unix.F_WRLCK
	}
	if err := unix.FcntlFlock(f.Fd(), unix.F_GETLK, &lk); err != nil || lk.Type == unix.F_UNLCK {
		return 0
	}
	return int(lk.Pid)
}

// checkAccess checks that acct (with no supplementary groups: the kernel
// runs without them) may access path in mode by its permission bits, and,
// without a chroot, may reach it through its directories; in a jail, the
// file is bound in below directories anyone may search. ACLs are not read.
func checkAccess(path string, acct Account, mode uint32, chroot bool) error {
	if !chroot {
		for dir := filepath.Dir(path); ; dir = filepath.Dir(dir) {
			fi, err := os.Stat(dir)
			if err != nil {
				return unwrapPath(err)
			}
			if !permits(fi, acct, unix.X_OK) {
				return fmt.Errorf("user %s (uid %d) cannot reach it: directory %s does not let it through (it runs with Chroot=no); grant search permission or move the file", acct.User, acct.UID, dir)
			}
			if dir == "/" {
				break
			}
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		return unwrapPath(err)
	}
	if !permits(fi, acct, mode) {
		return fmt.Errorf("user %s (uid %d, gid %d) may not %s it; change its owner, group or mode (the kernel runs as that user)", acct.User, acct.UID, acct.GID, accessWords(mode))
	}
	return nil
}

func permits(fi fs.FileInfo, acct Account, mode uint32) bool {
	st := fi.Sys().(*syscall.Stat_t)
	perm := uint32(fi.Mode().Perm())
	var bits uint32
	switch {
	case int(st.Uid) == acct.UID:
		bits = perm >> 6
	case int(st.Gid) == acct.GID:
		bits = perm >> 3
	default:
		bits = perm
	}
	return bits&mode&7 == mode
}

func accessWords(mode uint32) string {
	switch {
	case mode&unix.W_OK != 0:
		return "read and write"
	case mode&unix.X_OK != 0:
		return "execute"
	}
	return "read"
}

// unwrapPath drops the operation and path of an fs.PathError, which the
// callers' messages already name.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// makeCow creates the COW file path on backing for acct, readable by acct
// only. It is made under a temporary name and renamed into place, so that a
// crash never leaves a half-made or root-owned COW file that every later
// start would refuse.
func makeCow(path, backing string, acct Account) (err error) {
	tmp := path + ".umlsd-new" // only ever made here: a leftover is a crash's
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing %s: %w", tmp, err)
	}
	if err := cow.Create(tmp, backing); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	f, err := os.OpenFile(tmp, os.O_RDWR|unix.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w", tmp, err)
	}
	defer f.Close()
	if err := f.Chown(acct.UID, acct.GID); err != nil {
		return fmt.Errorf("giving COW file %s to the guest's account: %w", path, err)
	}
	if err := f.Chmod(0o600); err != nil {
		return fmt.Errorf("making COW file %s private: %w", path, err)
	}
	if err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, path, unix.RENAME_NOREPLACE); err != nil {
		return fmt.Errorf("putting COW file %s in place: %w", path, err)
	}
	return nil
}
