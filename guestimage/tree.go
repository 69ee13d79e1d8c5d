package guestimage

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

type kind uint8

const (
	dir kind = iota
	file
	symlink
)

// entry is one file of the image.
type entry struct {
	kind kind
	perm fs.FileMode // permission, setuid, setgid and sticky bits
	data []byte      // a file's content or a link's target
	src  string      // host file to copy a file's content from, instead of data
}

// tree is the image's content before it is staged, keyed by absolute path
// ("/" itself is implied). Adding a path replaces what was there, so the
// order of assemble's steps is the order of precedence.
type tree map[string]*entry

// assemble gathers everything the image holds.
func assemble(ctx context.Context, spec Spec) (tree, error) {
	t := tree{}
	for _, d := range []struct {
		path string
		perm fs.FileMode
	}{
		{"/bin", 0o755}, {"/sbin", 0o755}, {"/usr/bin", 0o755}, {"/usr/sbin", 0o755},
		{"/etc/init.d", 0o755}, {"/dev", 0o755}, {"/proc", 0o555}, {"/sys", 0o555},
		{"/run", 0o755}, {"/tmp", fs.ModeSticky | 0o777}, {"/mnt", 0o755}, {"/root", 0o700},
		{"/var", 0o755},
	} {
		if err := t.add(d.path, &entry{kind: dir, perm: d.perm}); err != nil {
			return nil, err
		}
	}

	// Applet links are made here rather than by `busybox --install` at
	// boot, which would need a writable root and make the image depend on
	// its first boot.
	if err := t.addHostFile("/bin/busybox", spec.Busybox); err != nil {
		return nil, fmt.Errorf("adding busybox: %w", err)
	}
	applets, err := busyboxApplets(ctx, spec.Busybox)
	if err != nil {
		return nil, err
	}
	for _, a := range applets {
		if a == "/bin/busybox" {
			continue
		}
		if err := t.add(a, &entry{kind: symlink, perm: 0o777, data: []byte("/bin/busybox")}); err != nil {
			return nil, fmt.Errorf("adding the applet link %s: %w", a, err)
		}
	}

	for _, f := range generatedFiles(spec) {
		if err := t.addFile(f); err != nil {
			return nil, err
		}
	}

	// Programs, with their libraries: busybox first, in case it is not
	// the static one.
	libs, err := libraries(ctx, spec.Busybox)
	if err != nil {
		return nil, err
	}
	for _, p := range spec.Programs {
		if err := t.addHostFile(p, p); err != nil {
			return nil, fmt.Errorf("adding program %s: %w", p, err)
		}
		l, err := libraries(ctx, p)
		if err != nil {
			return nil, err
		}
		libs = append(libs, l...)
	}
	slices.Sort(libs)
	for _, l := range slices.Compact(libs) {
		if err := t.addHostFile(l, l); err != nil {
			return nil, fmt.Errorf("adding library %s: %w", l, err)
		}
	}

	for _, f := range spec.Files {
		if err := t.addFile(f); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// busyboxApplets lists the absolute paths of busybox's applets, as
// `busybox --list-full` gives them.
func busyboxApplets(ctx context.Context, busybox string) ([]string, error) {
	out, err := run(ctx, busybox, "--list-full")
	if err != nil {
		return nil, err
	}
	var applets []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		p := "/" + strings.TrimSpace(line)
		if err := checkImagePath(p); err != nil {
			return nil, fmt.Errorf("%s --list-full listed %q: %w", busybox, line, err)
		}
		applets = append(applets, p)
	}
	if !slices.Contains(applets, "/sbin/init") || !slices.Contains(applets, "/bin/sh") {
		return nil, fmt.Errorf("%s has no init or sh applet", busybox)
	}
	return applets, nil
}

// addFile adds one of Spec.Files or a generated file.
func (t tree) addFile(f File) error {
	e := &entry{perm: f.Mode & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)}
	switch f.Mode.Type() {
	case fs.ModeDir:
		e.kind = dir
		if e.perm == 0 {
			e.perm = 0o755
		}
	case fs.ModeSymlink:
		e.kind, e.perm, e.data = symlink, 0o777, f.Data
		if len(f.Data) == 0 {
			return fmt.Errorf("file %s: a symbolic link needs a target in Data", f.Path)
		}
	default:
		e.kind, e.data = file, f.Data
		if e.perm == 0 {
			e.perm = 0o644
		}
	}
	if err := t.add(f.Path, e); err != nil {
		return fmt.Errorf("adding file %s: %w", f.Path, err)
	}
	return nil
}

// addHostFile adds the regular file src (symbolic links followed) at path p
// with its permission bits.
func (t tree) addHostFile(p, src string) error {
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", src)
	}
	return t.add(p, &entry{kind: file, perm: st.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky), src: src})
}

// add puts e at p, making missing parent directories.
func (t tree) add(p string, e *entry) error {
	if err := checkImagePath(p); err != nil {
		return err
	}
	for d := path.Dir(p); d != "/"; d = path.Dir(d) {
		switch pe := t[d]; {
		case pe == nil:
			t[d] = &entry{kind: dir, perm: 0o755}
		case pe.kind != dir:
			return fmt.Errorf("%s is not a directory in the image", d)
		}
	}
	if old := t[p]; old != nil && old.kind == dir && e.kind != dir {
		prefix := p + "/"
		for q := range t {
			if strings.HasPrefix(q, prefix) { // in no particular order
				return fmt.Errorf("%s is a directory in the image, and not empty", p)
			}
		}
	}
	t[p] = e
	return nil
}

// paths returns the tree's paths in lexical order, so parents come first.
func (t tree) paths() []string {
	ps := make([]string, 0, len(t))
	for p := range t {
		ps = append(ps, p)
	}
	slices.Sort(ps)
	return ps
}

// materialize creates the tree in the empty directory root and returns a
// digest of its content (paths, types, modes, data), from which the file
// system's identifiers are derived.
func (t tree) materialize(root string) ([32]byte, error) {
	var digest [32]byte
	h := sha256.New()
	if err := os.Chmod(root, 0o755); err != nil {
		return digest, fmt.Errorf("staging /: %w", err)
	}
	paths := t.paths()
	for _, p := range paths {
		e := t[p]
		name := filepath.Join(root, p)
		sum, err := e.create(name)
		if err != nil {
			return digest, fmt.Errorf("staging %s: %w", p, err)
		}
		fmt.Fprintf(h, "%q %d %o %x\n", p, e.kind, uint32(e.perm), sum)
	}
	// Last, since creating an entry changes its directory's times. Reading
	// the files above already happened, so atimes stay put too.
	ts := []unix.Timespec{{Sec: Epoch}, {Sec: Epoch}}
	for _, p := range append(paths, "/") {
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(root, p), ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return digest, fmt.Errorf("setting the times of %s: %w", p, err)
		}
	}
	copy(digest[:], h.Sum(nil))
	return digest, nil
}

// create makes the entry at name and returns a digest of its content.
func (e *entry) create(name string) ([]byte, error) {
	h := sha256.New()
	switch e.kind {
	case dir:
		if err := os.Mkdir(name, 0o700); err != nil {
			return nil, err
		}
	case symlink:
		h.Write(e.data)
		if err := os.Symlink(string(e.data), name); err != nil {
			return nil, err
		}
		return h.Sum(nil), nil
	case file:
		f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, err
		}
		w := io.MultiWriter(f, h)
		if e.src != "" {
			err = copyFrom(w, e.src)
		} else {
			_, err = w.Write(e.data)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, err
		}
	}
	// Explicitly, so the umask has no say.
	if err := os.Chmod(name, e.perm); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

func copyFrom(w io.Writer, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(w, f)
	return err
}

// debugfsScript sets what mke2fs copied from the host and an unprivileged
// user cannot choose: every inode's owner (root) and ctime (Epoch). It also
// makes /dev/console, which the kernel opens for init before anything is
// mounted, and /dev/null: devtmpfs covers both when the kernel mounts it.
func (t tree) debugfsScript() []byte {
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	fix := func(p string) {
		q := quoteDebugfs(p)
		fmt.Fprintf(w, "sif %s uid 0\nsif %s gid 0\nsif %s ctime @%d\n", q, q, q, Epoch)
	}
	fix("/")
	for _, p := range t.paths() {
		fix(p)
	}
	if e := t["/dev"]; e != nil && e.kind == dir {
		for _, n := range []struct {
			name         string
			major, minor int
			mode         string
		}{{"console", 5, 1, "020600"}, {"null", 1, 3, "020666"}} {
			if t["/dev/"+n.name] != nil {
				continue
			}
			// mknod makes the name in the current directory, whatever
			// the path says.
			fmt.Fprintf(w, "cd /dev\nmknod %s c %d %d\ncd /\nsif /dev/%s mode %s\n", n.name, n.major, n.minor, n.name, n.mode)
			fix("/dev/" + n.name)
		}
	}
	w.Flush()
	return b.Bytes()
}

// quoteDebugfs quotes a path for debugfs's command parser, in which "" is a
// literal quote inside a quoted word.
func quoteDebugfs(p string) string {
	return `"` + strings.ReplaceAll(p, `"`, `""`) + `"`
}

// run runs a host command with a scrubbed environment, so nothing like
// LD_LIBRARY_PATH or MKE2FS_CONFIG changes what it does, and returns its
// standard output.
func run(ctx context.Context, name string, args ...string) ([]byte, error) {
	return runEnv(ctx, nil, name, args...)
}

func runEnv(ctx context.Context, env []string, name string, args ...string) ([]byte, error) {
	cmd := newCmd(ctx, env, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("running %s: %w: %s", strings.Join(cmd.Args, " "), err, compact(stderr.String()+"\n"+stdout.String()))
	}
	return stdout.Bytes(), nil
}

// compact drops the empty lines of a command's output for an error message.
func compact(out string) string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

// newCmd prepares a host command with PATH, the C locale and env only.
// mke2fs and debugfs live in /usr/sbin, which is not in every user's PATH.
func newCmd(ctx context.Context, env []string, name string, args ...string) *exec.Cmd {
	if _, err := exec.LookPath(name); err != nil && !strings.Contains(name, "/") {
		for _, d := range []string{"/usr/sbin", "/sbin"} {
			if p := filepath.Join(d, name); unix.Access(p, unix.X_OK) == nil {
				name = p
				break
			}
		}
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "LC_ALL=C"}, env...)
	return cmd
}

// uuidFrom makes an RFC 9562 version 8 (custom) UUID from the first 16 bytes
// of sum.
func uuidFrom(sum []byte) string {
	var u [16]byte
	copy(u[:], sum)
	u[6] = u[6]&0x0f | 0x80 // version 8
	u[8] = u[8]&0x3f | 0x80 // variant 10
	x := hex.EncodeToString(u[:])
	return x[0:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:32]
}
