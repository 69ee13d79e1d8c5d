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
	"umlsd/internal/printable"
	"umlsd/jail"
	"umlsd/netprep"
	"umlsd/umlkernel"
)

// Memory the guest's memory tmpfs has beyond the guest's RAM: UML maps a
// little more than mem= (uml-facts.md, "Memory").
const memorySlack = 32 << 20

// kernelPersonality is the personality every guest kernel runs with: no
// address space layout randomisation. UML counts the distance between its
// binary's end and its randomised heap (up to 1 GiB away) as physical
// memory, and the page structures for that gap, up to 16 MiB, come out of
// the guest's RAM: a guest got anything from a third to all of what it
// asked for, and small guests failed to boot (uml-facts.md, "Memory").
// The kernel's binary is at a fixed address anyway; the guest's own
// processes are laid out by the guest kernel, randomised as before.
const kernelPersonality = jail.AddrNoRandomize

// runtimeSize is the size of the tmpfs the kernel sees at its runtime
// directory: its umid directory, pid file and management console socket.
const runtimeSize = 1 << 20

// plan is everything a start needs, found by preflight before anything on
// the host is changed.
type plan struct {
	guest   *config.Guest
	account Account
	layout  Layout
	argv    []string
	env     []string
	jail    jail.Spec
	// personality is the kernel's, locked (kernelPersonality).
	personality uint32
	release     string // the kernel's (umlkernel.Release)
	makeCow     bool   // the COW file does not exist yet
	stateDir    string // the default COW file's directory, to create if missing
	rules       netprep.RuleSet
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
// database (the default account is created on first start) and
// br_netfilter's settings, and plans the start. It stops at the first
// problem.
// others are the other configured guests; lookup resolves the host names
// of firewall rules.
func preflight(ctx context.Context, db accounts, g *config.Guest, others []*config.Guest, l Layout, log Log, lookup netprep.Lookup) (*plan, error) {
	in := &inspection{
		g: g, others: others, db: db, lookup: lookup, log: log,
		procSys: "/proc/sys", modprobe: []string{"modprobe"}, unitOf: unitOfProcess,
	}
	for _, step := range in.steps() {
		if err := step(ctx); err != nil {
			return nil, err
		}
	}
	p := &plan{guest: g, account: in.acct, layout: l, argv: KernelCommandLine(g, l), personality: kernelPersonality,
		release: in.release, rules: in.rules, makeCow: in.makeCow}
	p.env = []string{"TMPDIR=" + l.Memory()}
	if dir := filepath.Dir(g.Cow); g.Cow != "" && dir == filepath.Join(config.StateDir, g.Name) {
		p.stateDir = dir
	}

	var mounts []jail.Mount
	if g.Chroot {
		for _, f := range in.files {
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
		jail.Mount{Target: l.Dir, Size: runtimeSize, Inodes: 64, Mode: 0o700, UID: in.acct.UID, GID: in.acct.GID},
		jail.Mount{Target: l.Notify(), Source: l.Notify()},
		jail.Mount{Target: l.Memory(), Size: g.Memory + memorySlack, Inodes: 64, Mode: 0o700, UID: in.acct.UID, GID: in.acct.GID, Exec: true},
	)
	return p, nil
}

// An inspection is one run of the checks of a guest's start, shared by the
// supervisor's preflight and by Check. preflight stops at the first problem
// and makes the changes a start needs first (the default account,
// br_netfilter); with dryRun (Check) every check runs, nothing is changed,
// and what a start would change is noted instead.
type inspection struct {
	g        *config.Guest
	others   []*config.Guest
	db       accounts
	lookup   netprep.Lookup
	procSys  string   // /proc/sys
	modprobe []string // the command that loads a kernel module
	unitOf   func(pid int) string
	log      Log // preflight: what it changed

	dryRun bool

	// What was found.
	acct     Account
	acctOK   bool // acct is known: the permission checks need it
	rules    netprep.RuleSet
	files    []string // the kernel's program files
	release  string   // the kernel's release
	makeCow  bool     // the COW file does not exist yet
	findings []Finding
}

// steps are the checks in the order a start needs them: each returns its
// problem, and what later steps need is kept in the inspection.
func (in *inspection) steps() []func(context.Context) error {
	steps := []func(context.Context) error{in.checkAccount}
	if in.g.Network != nil {
		steps = append(steps, in.checkBridge, in.checkBridgeFilter, in.checkFirewall)
	}
	steps = append(steps, in.checkKernel, in.checkRootImage)
	for _, d := range in.g.Disks {
		steps = append(steps, func(context.Context) error { return in.checkDisk(d) })
	}
	if in.g.Cow != "" {
		steps = append(steps, in.checkCow)
	}
	return steps
}

func (in *inspection) note(format string, args ...any) {
	in.findings = append(in.findings, Finding{Severity: Note, Message: fmt.Sprintf(format, args...)})
}

func (in *inspection) checkAccount(ctx context.Context) error {
	acct, created, err := resolveAccount(ctx, in.db, in.g, !in.dryRun)
	if err != nil {
		return err
	}
	in.acct, in.acctOK = acct, true
	if err := checkShared(in.db, in.g, acct, in.others); err != nil {
		return err
	}
	if created {
		in.log.Event(journal.PriNotice, fmt.Sprintf("created the guest's system account %s (uid %d)", acct.User, acct.UID))
	}
	if acct.pending() {
		in.note("the guest's account %s does not exist yet; the guest's first start creates it, as a system user without a login", acct.User)
	}
	return nil
}

func (in *inspection) checkKernel(context.Context) error {
	g := in.g
	// Checked before its ELF header is read: a FIFO would block that.
	fi, err := os.Stat(g.Kernel)
	if errors.Is(err, fs.ErrPermission) {
		return hostErrorf("Kernel=%s: %w", g.Kernel, unwrapPath(err))
	}
	if (err != nil || !fi.Mode().IsRegular()) && g.KernelIsDefault {
		return hostErrorf("Kernel=%s, umlsd's own kernel and the default, is not a program file; install umlsd again, or set Kernel= (to /usr/bin/linux.uml for Debian's)", g.Kernel)
	}
	if err != nil || !fi.Mode().IsRegular() {
		return hostErrorf("Kernel=%s is not a program file; install that kernel, or fix Kernel=", g.Kernel)
	}
	if err := in.access(g.Kernel, unix.X_OK|unix.R_OK); err != nil {
		return hostErrorf("Kernel=%s: %w", g.Kernel, err)
	}
	if in.files, err = jail.ProgramFiles(g.Kernel); err != nil {
		return hostErrorf("Kernel=%s cannot be run: %w", g.Kernel, err)
	}
	if in.release, err = umlkernel.Release(g.Kernel); err != nil {
		return hostErrorf("Kernel=%s: %w; set Kernel= to a User-Mode Linux kernel", g.Kernel, unwrapPath(err))
	}
	in.findings = append(in.findings, Finding{Severity: Info, Message: fmt.Sprintf("the guest boots Linux %s (Kernel=%s)", in.release, g.Kernel)})
	return nil
}

func (in *inspection) checkRootImage(context.Context) error {
	// The root image is written only when there is no COW file.
	mode := uint32(unix.R_OK)
	if in.g.Cow == "" {
		mode |= unix.W_OK
	}
	return in.checkImage("RootImage", in.g.RootImage, mode)
}

func (in *inspection) checkDisk(d config.Disk) error {
	mode := uint32(unix.R_OK | unix.W_OK)
	if d.ReadOnly {
		mode = unix.R_OK
	}
	return in.checkImage("Disk", d.Path, mode)
}

func (in *inspection) checkImage(key, path string, mode uint32) error {
	fi, err := os.Stat(path)
	if err != nil {
		return hostErrorf("%s=%s: %w", key, path, unwrapPath(err))
	}
	if !fi.Mode().IsRegular() && fi.Mode()&fs.ModeDevice == 0 {
		return hostErrorf("%s=%s is not a file or a block device", key, path)
	}
	if err := in.access(path, mode); err != nil {
		return hostErrorf("%s=%s: %w", key, path, err)
	}
	return in.inUse(key+"="+path, path, mode&unix.W_OK != 0)
}

// checkCow checks an existing COW file against its backing file, as the
// kernel will at boot, and notes whether the file is still to be made.
func (in *inspection) checkCow(context.Context) error {
	g := in.g
	fi, err := os.Stat(g.Cow)
	if errors.Is(err, fs.ErrNotExist) {
		dir := filepath.Dir(g.Cow)
		if dir != filepath.Join(config.StateDir, g.Name) {
			if _, err := os.Stat(dir); err != nil {
				return hostErrorf("Cow=%s: its directory: %w", g.Cow, unwrapPath(err))
			}
		}
		in.makeCow = true
		in.note("the COW file %s does not exist yet; the guest's first start creates it on RootImage=%s", g.Cow, g.RootImage)
		return nil
	}
	if err != nil {
		return hostErrorf("Cow=%s: %w", g.Cow, unwrapPath(err))
	}
	if !fi.Mode().IsRegular() {
		return hostErrorf("Cow=%s is not a regular file", g.Cow)
	}
	if err := in.access(g.Cow, unix.R_OK|unix.W_OK); err != nil {
		return hostErrorf("Cow=%s: %w", g.Cow, err)
	}
	h, err := cow.Read(g.Cow)
	if errors.Is(err, fs.ErrPermission) { // only Check runs without root
		return hostErrorf("Cow=%s: %w", g.Cow, unwrapPath(err))
	}
	if err != nil {
		return hostErrorf("Cow=%s is not a usable COW file: %w", g.Cow, err)
	}
	if !cow.SameFile(h.Backing, g.RootImage) {
		return hostErrorf("COW file %s was made for backing file %s, not RootImage=%s; set RootImage= to that file, or move the COW file away to start afresh", g.Cow, printable.Line(h.Backing), g.RootImage)
	}
	bfi, err := os.Stat(g.RootImage)
	if err != nil {
		return hostErrorf("RootImage=%s: %w", g.RootImage, unwrapPath(err))
	}
	if err := h.Matches(bfi); err != nil {
		return configError{err}
	}
	return in.inUse("COW file "+g.Cow, g.Cow, true)
}

// access checks that the guest's account may access path in mode; without
// a known account there is nothing to check against.
func (in *inspection) access(path string, mode uint32) error {
	if !in.acctOK {
		return nil
	}
	return checkAccess(path, in.acct, mode, in.g.Chroot)
}

// inUse refuses path (what names it) when a process holds a lock on it
// that conflicts with reading, or with write, writing it: UML locks its
// images. Check notes the lock of the guest's own running kernel instead.
func (in *inspection) inUse(what, path string, write bool) error {
	holder, err := cow.LockHolder(path, write)
	if err != nil {
		if !in.dryRun {
			// A file root can stat it can open: whatever failed, the
			// kernel will report it better.
			return nil
		}
		return fmt.Errorf("%s: opening it to see whether a kernel uses it: %w", what, unwrapPath(err))
	}
	if holder == 0 {
		return nil
	}
	if holder < 0 { // an open file description lock has no owner process
		return hostErrorf("%s is locked by another process; find it with fuser and stop it first", what)
	}
	unit := in.unitOf(holder)
	if in.dryRun && unit == in.g.UnitName() {
		in.note("%s is in use by the guest's own kernel (process %d): %s is running", what, holder, unit)
		return nil
	}
	by := fmt.Sprintf("process %d (another UML kernel?)", holder)
	if unit != "" {
		by = fmt.Sprintf("process %d of %s", holder, unit)
	}
	return hostErrorf("%s is in use by %s; stop it first", what, by)
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
				return fmt.Errorf("%s cannot reach it: directory %s does not let it through (it runs with Chroot=no); grant search permission or move the file", acct.describe(), dir)
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
		return fmt.Errorf("%s may not %s it; change its owner, group or mode (the kernel runs as that user)", acct.describe(), accessWords(mode))
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
