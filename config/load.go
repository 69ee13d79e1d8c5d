package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
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
}

// Load reads one guest's main file and drop-ins. The error names the file
// and line of every problem.
func (l Loader) Load(name string) (*Guest, error) {
	if !ValidName(name) {
		return nil, fmt.Errorf("%q is not a guest name; guest names are 1 to 32 lower-case letters, digits, dashes and underscores", name)
	}
	if err := l.checkDir(l.Dir); err != nil {
		return nil, err
	}
	hasDropIns := false
	if _, err := os.Lstat(filepath.Join(l.Dir, name+".conf.d")); err == nil {
		hasDropIns = true
	}
	return l.load(name, hasDropIns)
}

// LoadAll reads every guest in the directory; a missing directory holds no
// guest. One guest's errors never keep another from loading; guests that
// conflict with each other (same tap, MAC, address, COW file, …) all fail.
// The error is for a directory that cannot be read or trusted.
func (l Loader) LoadAll() (*Set, error) {
	set := &Set{}
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
		case isBackup(fname):
		default:
			set.Warnings = append(set.Warnings, fmt.Sprintf("%s: ignored: guest configurations are named NAME.conf, NAME being 1 to 32 lower-case letters, digits, dashes and underscores", filepath.Join(l.Dir, fname)))
		}
	}
	for _, de := range dirents { // ReadDir sorts by name: deterministic
		if base, ok := strings.CutSuffix(de.Name(), ".conf.d"); ok && dropInDirs[base] && !slices.Contains(names, base) {
			set.Warnings = append(set.Warnings, fmt.Sprintf("%s: ignored: there is no %s.conf for these drop-ins to apply to", filepath.Join(l.Dir, de.Name()), base))
		}
	}

	// Parse on every core: this runs at every boot and daemon-reload.
	guests := make([]*Guest, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(runtime.GOMAXPROCS(0), len(names)) {
		wg.Go(func() {
			for i := range next {
				guests[i], errs[i] = l.load(names[i], dropInDirs[names[i]])
			}
		})
	}
	for i := range names {
		next <- i
	}
	close(next)
	wg.Wait()

	conflicts := findConflicts(guests)
	for i, name := range names {
		err := errors.Join(errs[i], conflicts[i].err())
		if err != nil {
			set.Failed = append(set.Failed, &Failure{Name: name, Path: filepath.Join(l.Dir, name+".conf"), Err: err})
			continue
		}
		set.Guests = append(set.Guests, guests[i])
	}
	return set, nil
}

func (l Loader) load(name string, hasDropIns bool) (*Guest, error) {
	path := filepath.Join(l.Dir, name+".conf")
	main, err := l.readTrusted(path)
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
	return Parse(name, srcs...)
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
		src, err := l.readTrusted(filepath.Join(dir, de.Name()))
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
func (l Loader) readTrusted(path string) (Source, error) {
	f, err := os.Open(path)
	if err != nil {
		return Source{}, fmt.Errorf("%s: cannot be read: %w", path, errors.Unwrap(err))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return Source{}, fmt.Errorf("%s: cannot be read: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return Source{}, fmt.Errorf("%s: is not a regular file; a guest configuration must be one", path)
	}
	if err := l.checkOwner(path, fi); err != nil {
		return Source{}, err
	}
	if lfi, err := os.Lstat(path); err == nil && lfi.Mode()&fs.ModeSymlink != 0 {
		target, err := filepath.EvalSymlinks(path)
		if err != nil {
			return Source{}, fmt.Errorf("%s: cannot resolve the symbolic link: %w", path, err)
		}
		if err := l.checkDir(filepath.Dir(target)); err != nil {
			return Source{}, err
		}
	}
	data := make([]byte, fi.Size()+1)
	n, err := io.ReadFull(f, data)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return Source{}, fmt.Errorf("%s: cannot be read: %w", path, err)
	}
	if n == len(data) { // grew while we read it: read the rest
		rest, err := io.ReadAll(f)
		if err != nil {
			return Source{}, fmt.Errorf("%s: cannot be read: %w", path, err)
		}
		data = append(data, rest...)
		n = len(data)
	}
	return Source{Path: path, Data: data[:n]}, nil
}

func (l Loader) checkDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("%s: cannot be read: %w", dir, errors.Unwrap(err))
	}
	return l.checkOwner(dir, fi)
}

func (l Loader) checkOwner(path string, fi fs.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%s: cannot tell who owns it", path)
	}
	what := "file"
	if fi.IsDir() {
		what = "directory"
	}
	if st.Uid != l.Owner {
		return fmt.Errorf("%s: refused: the %s is owned by uid %d, but it decides what root runs and must be owned by uid %d; run chown %d %s", path, what, st.Uid, l.Owner, l.Owner, path)
	}
	if fi.Mode().Perm()&0o022 != 0 {
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
