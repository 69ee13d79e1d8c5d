package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"umlsd/internal/parallel"
)

// DefaultDir is where the configurations live.
const DefaultDir = "/etc/uml"

// Loader reads guest configurations from a directory.
type Loader struct {
	Dir string
	// Owner is the uid that must own the files and the directories that
	// hold them: root (the zero value) on a real host, because these files
	// decide what root executes.
	Owner uint32
	// Kernel is the default of Kernel=, where the installed umlsd's own
	// kernel is; "" means DefaultKernel.
	Kernel string
}

// Set is everything found in the configuration directory.
type Set struct {
	Guests   []*Guest   // valid guests, by name
	Failed   []*Failure // guests whose files have errors, by name
	Warnings []string   // files that were ignored, and why
}

// Failure is a guest that cannot be used, and why.
type Failure struct {
	Name string
	Path string
	Err  error
	// Guest is the guest when its only problems are conflicts with other
	// guests, found after it was parsed (and passed to LoadAllFunc's visit).
	Guest *Guest
}

// Load reads one guest's main file and drop-ins. The error names the file
// and line of every problem.
func (l Loader) Load(name string) (*Guest, error) {
	if !ValidName(name) {
		return nil, fmt.Errorf("%q is not a guest name; %s", name, nameRule)
	}
	if err := l.checkDir(l.Dir); err != nil {
		return nil, err
	}
	hasDropIns := false
	if _, err := os.Lstat(filepath.Join(l.Dir, name+".conf.d")); err == nil {
		hasDropIns = true
	}
	isLink := false
	if fi, err := os.Lstat(filepath.Join(l.Dir, name+".conf")); err == nil {
		isLink = fi.Mode()&fs.ModeSymlink != 0
	}
	return l.load(name, isLink, hasDropIns)
}

// LoadAll reads every guest in the directory; a missing directory holds no
// guest. One guest's errors never keep another from loading; guests that
// conflict with each other (same tap, MAC, address, COW file, …) all fail.
// The error is for a directory that cannot be read or trusted.
func (l Loader) LoadAll() (*Set, error) { return l.LoadAllFunc(nil) }

// LoadAllFunc is LoadAll that also passes each guest that parses to visit,
// as soon as it is parsed, from several goroutines at once: the generator
// writes a guest's units while others are still being parsed. Conflicts
// between guests are known only at the end; a visited guest that turns out
// to conflict is in Set.Failed with its Guest set, and the caller undoes
// what visit did for it.
func (l Loader) LoadAllFunc(visit func(*Guest)) (*Set, error) {
	set := &Set{}
	if bad, ok := checkText(l.Dir); !ok {
		return nil, fmt.Errorf("%q: the configuration directory's path contains %s; use another", l.Dir, bad)
	}
	dirents, err := os.ReadDir(l.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return set, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", l.Dir, err)
	}
	if err := l.checkDir(l.Dir); err != nil {
		return nil, err
	}
	var names []string
	links := map[string]bool{} // also: which names have a main file
	hasMain := func(name string) bool { _, ok := links[name]; return ok }
	dropInDirs := map[string]bool{}
	for _, de := range dirents {
		fname := de.Name()
		if base, ok := strings.CutSuffix(fname, ".conf.d"); ok && ValidName(base) {
			dropInDirs[base] = true
			continue
		}
		base, ok := strings.CutSuffix(fname, ".conf")
		switch {
		case ok && ValidName(base):
			names = append(names, base)
			links[base] = de.Type()&fs.ModeSymlink != 0
		case isBackup(fname):
		default:
			set.Warnings = append(set.Warnings, fmt.Sprintf("%q: ignored: guest configurations are named NAME.conf, and %s", filepath.Join(l.Dir, fname), nameRule))
		}
	}
	for _, de := range dirents { // ReadDir sorts by name: deterministic
		if base, ok := strings.CutSuffix(de.Name(), ".conf.d"); ok && dropInDirs[base] && !hasMain(base) {
			set.Warnings = append(set.Warnings, fmt.Sprintf("%s: ignored: there is no %s.conf for these drop-ins to apply to", filepath.Join(l.Dir, de.Name()), base))
		}
	}

	// This runs at every boot and daemon-reload: parse on every core.
	guests := make([]*Guest, len(names))
	errs := make([]error, len(names))
	parallel.Each(len(names), func(i int) {
		guests[i], errs[i] = l.load(names[i], links[names[i]], dropInDirs[names[i]])
		if visit != nil && guests[i] != nil {
			visit(guests[i])
		}
	})

	conflicts := findConflicts(guests)
	for i, name := range names {
		f := &Failure{Name: name, Path: filepath.Join(l.Dir, name+".conf"), Err: errs[i]}
		if err := conflicts[i].err(); err != nil {
			f.Err, f.Guest = err, guests[i]
		}
		if f.Err != nil {
			set.Failed = append(set.Failed, f)
			continue
		}
		set.Guests = append(set.Guests, guests[i])
	}
	return set, nil
}

func (l Loader) load(name string, isLink, hasDropIns bool) (*Guest, error) {
	path := filepath.Join(l.Dir, name+".conf")
	main, err := l.readTrusted(path, isLink)
	if err != nil {
		return nil, err
	}
	srcs := []Source{main}
	if hasDropIns {
		dir := filepath.Join(l.Dir, name+".conf.d")
		dropIns, err := l.readDropIns(dir)
		if err != nil {
			return nil, err
		}
		srcs = append(srcs, dropIns...)
	}
	g, err := Parse(name, srcs...)
	if err == nil && g.KernelIsDefault && l.Kernel != "" {
		g.Kernel = l.Kernel
	}
	return g, err
}

func (l Loader) readDropIns(dir string) ([]Source, error) {
	if err := l.checkDir(dir); err != nil {
		return nil, err
	}
	dirents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", dir, err)
	}
	var srcs []Source
	for _, de := range dirents {
		if !strings.HasSuffix(de.Name(), ".conf") || strings.HasPrefix(de.Name(), ".") {
			continue
		}
		if !validDropInName(de.Name()) {
			// Its path goes into the generated unit's comments and the log.
			return nil, fmt.Errorf("%q: refused: a drop-in's name is letters, digits, dots, dashes, underscores and @; rename it", filepath.Join(dir, de.Name()))
		}
		src, err := l.readTrusted(filepath.Join(dir, de.Name()), de.Type()&fs.ModeSymlink != 0)
		if err != nil {
			return nil, err
		}
		srcs = append(srcs, src)
	}
	return srcs, nil
}

// readTrusted reads a file that must be owned by Owner and not writable by
// group or others; through a symbolic link, so must be the directory of its
// target.
//
// It uses raw system calls: this runs for every file at every boot and
// daemon-reload, and os.File's extra calls per file (non-blocking mode,
// poller registration) would double the time spent reading.
func (l Loader) readTrusted(path string, isLink bool) (Source, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
	if err != nil {
		return Source{}, fmt.Errorf("%s: cannot be read: %w", path, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return Source{}, fmt.Errorf("%s: cannot be read: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return Source{}, fmt.Errorf("%s: is not a regular file; a guest configuration must be one", path)
	}
	if err := l.checkOwner(path, st.Uid, st.Mode, false); err != nil {
		return Source{}, err
	}
	if st.Size > MaxFileSize {
		return Source{}, errTooLarge(path)
	}
	if isLink {
		target, err := filepath.EvalSymlinks(path)
		if err != nil {
			return Source{}, fmt.Errorf("%s: cannot resolve the symbolic link: %w", path, err)
		}
		if err := l.checkDir(filepath.Dir(target)); err != nil {
			return Source{}, err
		}
	}
	// One byte more than its size, to see the end of the file in one read.
	data := make([]byte, 0, st.Size+1)
	for {
		n, err := unix.Read(fd, data[len(data):cap(data)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return Source{}, fmt.Errorf("%s: cannot be read: %w", path, err)
		}
		if n == 0 {
			return Source{Path: path, Data: data}, nil
		}
		data = data[:len(data)+n]
		if len(data) > MaxFileSize {
			return Source{}, errTooLarge(path)
		}
		if len(data) == cap(data) { // it grew while we read it
			data = slices.Grow(data, 4096)
		}
	}
}

// MaxFileSize bounds what is read of one file: a guest configuration is a
// few hundred bytes, and one huge file must not stall every guest's boot.
const MaxFileSize = 64 << 10

func errTooLarge(path string) error {
	return fmt.Errorf("%s: refused: it is larger than %d KiB, which no guest configuration needs; check what it is", path, MaxFileSize>>10)
}

// validDropInName reports whether a drop-in's file name is one that can be
// written into comments and logs as it is.
func validDropInName(name string) bool {
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._@-", c) >= 0) {
			return false
		}
	}
	return true
}

func (l Loader) checkDir(dir string) error {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return fmt.Errorf("%s: cannot be read: %w", dir, err)
	}
	return l.checkOwner(dir, st.Uid, st.Mode, true)
}

func (l Loader) checkOwner(path string, uid, mode uint32, isDir bool) error {
	what := "file"
	if isDir {
		what = "directory"
	}
	if uid != l.Owner {
		return fmt.Errorf("%s: refused: the %s is owned by uid %d, but it decides what root runs and must be owned by uid %d; run chown %d %s", path, what, uid, l.Owner, l.Owner, path)
	}
	if mode&0o022 != 0 {
		return fmt.Errorf("%s: refused: the %s is writable by group or others, but it decides what root runs; run chmod go-w %s", path, what, path)
	}
	return nil
}

// isBackup reports files that editors and package managers leave behind,
// which are ignored without a warning.
func isBackup(name string) bool {
	if strings.HasPrefix(name, ".") || strings.HasPrefix(name, "#") {
		return true
	}
	for _, s := range []string{"~", ".swp", ".swo", ".bak", ".orig", ".rej", ".tmp", ".rpmnew", ".rpmsave", ".dpkg-old", ".dpkg-new", ".dpkg-dist", ".dpkg-tmp", ".ucf-old", ".ucf-new", ".ucf-dist"} {
		if strings.HasSuffix(name, s) {
			return true
		}
	}
	return false
}
