package generator

import (
	"bytes"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// outDir writes generated files into one directory and nowhere else. Every
// file is DIR/NAME, both single path components; DIR is created (or found
// to be a real directory) before anything is written into it, and the last
// component is never followed if it is a symbolic link, so no name leads
// out of the directory.
//
// It uses raw *at system calls: the generator runs at every boot and
// daemon-reload for every guest, and os.File's extra calls per file
// (non-blocking mode, poller registration) would double its run time.
type outDir struct {
	fd   int
	path string
}

// openOutDir opens the output directory, creating it for a run by hand
// (systemd passes one that exists).
func openOutDir(path string) (*outDir, error) {
	if err := os.MkdirAll(path, 0o755); err != nil {
		return nil, fmt.Errorf("creating the output directory: %w", err)
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening the output directory %s: %w", path, err)
	}
	return &outDir{fd: fd, path: path}, nil
}

func (o *outDir) close() error { return unix.Close(o.fd) }

// mkdir creates a directory in the output directory; one that exists
// already must be a real directory, not a link to elsewhere.
func (o *outDir) mkdir(name string) error {
	if !component(name) {
		return fmt.Errorf("creating %s/%s: not a single file name", o.path, name)
	}
	err := unix.Mkdirat(o.fd, name, 0o755)
	if err != unix.EEXIST {
		return o.wrap("creating", name, err)
	}
	var st unix.Stat_t
	if err := unix.Fstatat(o.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return o.wrap("checking", name, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return fmt.Errorf("creating %s/%s: it exists and is not a directory", o.path, name)
	}
	return nil
}

// write writes a file or link into a directory made by mkdir. Writing
// again replaces it.
func (o *outDir) write(f File) error {
	dir, name, ok := strings.Cut(f.Path, "/")
	if !ok || !component(dir) || !component(name) {
		return fmt.Errorf("writing %s/%s: not DIR/NAME", o.path, f.Path)
	}
	if f.Link != "" {
		err := unix.Symlinkat(f.Link, o.fd, f.Path)
		if err == unix.EEXIST {
			buf := make([]byte, len(f.Link)+1)
			if n, rerr := unix.Readlinkat(o.fd, f.Path, buf); rerr == nil && bytes.Equal(buf[:n], []byte(f.Link)) {
				return nil
			}
			if err = unix.Unlinkat(o.fd, f.Path, 0); err == nil {
				err = unix.Symlinkat(f.Link, o.fd, f.Path)
			}
		}
		return o.wrap("linking", f.Path, err)
	}
	fd, err := unix.Openat(o.fd, f.Path, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return o.wrap("writing", f.Path, err)
	}
	for data := f.Data; len(data) > 0 && err == nil; {
		var n int
		n, err = unix.Write(fd, data)
		data = data[n:]
	}
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	return o.wrap("writing", f.Path, err)
}

// remove removes a file, link or empty directory written before.
func (o *outDir) remove(name string, dir bool) error {
	flags := 0
	if dir {
		flags = unix.AT_REMOVEDIR
	}
	return o.wrap("removing", name, unix.Unlinkat(o.fd, name, flags))
}

// removeIfEmpty removes a directory that other guests may still use.
func (o *outDir) removeIfEmpty(name string) {
	_ = unix.Unlinkat(o.fd, name, unix.AT_REMOVEDIR) // ENOTEMPTY: still used
}

func (o *outDir) wrap(verb, name string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s %s/%s: %w", verb, o.path, name, err)
}

// component reports whether s is one path component that stays in place.
func component(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.Contains(s, "/")
}
