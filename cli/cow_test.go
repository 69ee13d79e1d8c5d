package cli

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"umlsd/cow"
	"umlsd/internal/golden"
	"umlsd/internal/printable"
	"umlsd/internal/testbed"
)

const fixtureMTime = 1700000000

// cowEnv is an Env with buffers for the output, no input and an empty
// configuration directory.
func cowEnv(t *testing.T) (*Env, *bytes.Buffer, *bytes.Buffer) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	return &Env{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr, ConfigDir: t.TempDir(), RuntimeDir: t.TempDir()}, &stdout, &stderr
}

// cowFixture makes a 5300-byte backing file (10 whole sectors and a
// partial one) with mtime fixtureMTime, and a COW file on it with sectors
// 1, 2 and the partial last one written.
func cowFixture(t *testing.T, dir string) (backing, cowPath string) {
	t.Helper()
	return cowFixtureOn(t, dir, "root.img")
}

// cowFixtureOn is cowFixture with the backing file named name.
func cowFixtureOn(t *testing.T, dir, name string) (backing, cowPath string) {
	t.Helper()
	backing = filepath.Join(dir, name)
	if err := os.WriteFile(backing, bytes.Repeat([]byte("root"), 5300/4), 0o644); err != nil {
		t.Fatal(err)
	}
	setMTime(t, backing, fixtureMTime)
	cowPath = filepath.Join(dir, "root.cow")
	if err := cow.Create(cowPath, backing); err != nil {
		t.Fatal(err)
	}
	h, err := cow.Read(cowPath)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(cowPath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, i := range []int64{1, 2, 10} {
		if _, err := f.WriteAt(bytes.Repeat([]byte("guest   "), 64), h.DataOffset+i*512); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.WriteAt([]byte{0b110, 0b100}, h.BitmapOffset); err != nil {
		t.Fatal(err)
	}
	return backing, cowPath
}

func setMTime(t *testing.T, path string, sec int64) {
	t.Helper()
	if err := os.Chtimes(path, time.Now(), time.Unix(sec, 0)); err != nil {
		t.Fatal(err)
	}
}

// exitOf runs umlctl with args and returns its exit status.
func exitOf(env *Env, args ...string) int {
	return ExitStatus(Run(context.Background(), args, env))
}

func TestCowInfoGolden(t *testing.T) {
	remove := func(t *testing.T, backing string) {
		if err := os.Remove(backing); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name    string
		backing string // its name
		spoil   func(t *testing.T, backing string)
	}{
		{"matches", "root.img", func(*testing.T, string) {}},
		{"touched", "root.img", func(t *testing.T, backing string) { setMTime(t, backing, fixtureMTime+3600) }},
		{"missing", "root.img", remove},
		// The guest wrote the header: its escape sequences must not reach
		// the terminal, to erase lines or forge them.
		{"escape", "root.img\x1b[1A\x1b[2K\rBacking matches: yes\n\u009b2J", remove},
	}
	for _, tt := range tests {
		for _, format := range []string{"txt", "json"} {
			t.Run(tt.name+"/"+format, func(t *testing.T) {
				dir := testbed.PhysicalTempDir(t)
				backing, cowPath := cowFixtureOn(t, dir, tt.backing)
				tt.spoil(t, backing)
				env, stdout, stderr := cowEnv(t)
				args := []string{"cow", "info", cowPath}
				if format == "json" {
					args = []string{"cow", "info", "--json", cowPath}
				}
				if st := exitOf(env, args...); st != 0 {
					t.Fatalf("exit status %d, stderr:\n%s", st, stderr)
				}
				if format == "json" { // escaped for the terminal, but the same value
					var ci cowInfo
					if err := json.Unmarshal(stdout.Bytes(), &ci); err != nil || ci.BackingFile != backing {
						t.Errorf("backing_file: %q (%v), want %q", ci.BackingFile, err, backing)
					}
				}
				// The temporary directory and the allocation, which depends on
				// the file system, are placeholders in the golden files.
				var st unix.Stat_t
				if err := unix.Stat(cowPath, &st); err != nil {
					t.Fatal(err)
				}
				out := strings.ReplaceAll(stdout.String(), dir, "$DIR")
				if format == "json" {
					out = strings.Replace(out, fmt.Sprintf(`"allocated_bytes": %d,`, st.Blocks*512), `"allocated_bytes": "$ALLOCATED",`, 1)
				} else {
					out = strings.Replace(out, bytesText(st.Blocks*512), "$ALLOCATED", 1)
				}
				golden.Check(t, filepath.Join("testdata", "cow-info-"+tt.name+"."+format), out)
			})
		}
	}
}

func TestCowUsage(t *testing.T) {
	tests := []struct {
		args []string
		want int
	}{
		{[]string{"cow"}, ExitUsage},
		{[]string{"cow", "bogus"}, ExitUsage},
		{[]string{"cow", "create", "a"}, ExitUsage},
		{[]string{"cow", "info"}, ExitUsage},
		{[]string{"cow", "info", "a", "b"}, ExitUsage},
		{[]string{"cow", "info", "--bogus", "a"}, ExitUsage},
		{[]string{"cow", "merge", "a"}, ExitUsage},
		{[]string{"cow", "merge", "--in-place", "a", "b"}, ExitUsage},
		{[]string{"cow", "merge", "--yes", "a", "b"}, ExitUsage},
		{[]string{"cow", "info", "/nonexistent/a.cow"}, ExitFailure},
		{[]string{"cow", "merge", "/nonexistent/a.cow", "/nonexistent/b.img"}, ExitFailure},
		{[]string{"cow", "create", "/nonexistent/root.img", "/nonexistent/a.cow"}, ExitFailure},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			env, _, stderr := cowEnv(t)
			if got := exitOf(env, tt.args...); got != tt.want {
				t.Errorf("exit status %d, want %d; stderr:\n%s", got, tt.want, stderr)
			}
			if !strings.HasPrefix(stderr.String(), "umlctl: ") || strings.Count(stderr.String(), "\n") != 1 {
				t.Errorf("stderr is not one umlctl: line:\n%s", stderr)
			}
		})
	}
}

func TestCowCreateAndMerge(t *testing.T) {
	dir := testbed.PhysicalTempDir(t)
	backing := filepath.Join(dir, "root.img")
	if err := os.WriteFile(backing, bytes.Repeat([]byte("root"), 1024), 0o644); err != nil {
		t.Fatal(err)
	}
	cowPath, merged := filepath.Join(dir, "root.cow"), filepath.Join(dir, "merged.img")
	env, stdout, stderr := cowEnv(t)
	if st := exitOf(env, "cow", "create", backing, cowPath); st != 0 {
		t.Fatalf("cow create: exit status %d, stderr:\n%s", st, stderr)
	}
	stdout.Reset()
	if st := exitOf(env, "cow", "merge", cowPath, merged); st != 0 {
		t.Fatalf("cow merge: exit status %d, stderr:\n%s", st, stderr)
	}
	if want := "Merged " + cowPath + " into " + merged + ": 0 sectors, 0 bytes, from the COW file, in "; !strings.Contains(stdout.String(), want) {
		t.Errorf("stdout:\n%s\nwant it to contain %q", stdout, want)
	}
	hint := merged + " is readable by root only, as it may hold the guest's private data; make it readable by the account of the guest that will use it (chmod 0644 " + merged + " if it holds nothing secret).\n"
	if !strings.HasSuffix(stdout.String(), hint) || strings.Count(stdout.String(), "\n") != 2 {
		t.Errorf("stdout:\n%s\nwant it to end with the line %q", stdout, hint)
	}
	if fi, err := os.Stat(merged); err != nil {
		t.Error(err)
	} else if fi.Mode() != 0o600 {
		t.Errorf("merged image has mode %v, want -rw-------", fi.Mode())
	}
	got, err := os.ReadFile(merged)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, bytes.Repeat([]byte("root"), 1024)) {
		t.Errorf("merged image is not the backing file")
	}
	// Again: the new image exists.
	stderr.Reset()
	if st := exitOf(env, "cow", "merge", cowPath, merged); st != ExitFailure {
		t.Errorf("cow merge onto an existing file: exit status %d, want %d", st, ExitFailure)
	}
	if want := "merged.img already exists; remove it or choose another name"; !strings.Contains(stderr.String(), want) {
		t.Errorf("stderr:\n%s\nwant it to contain %q", stderr, want)
	}
}

// writeGuest writes a guest configuration with RootImage=root.
func writeGuest(t *testing.T, env *Env, name, root string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(env.ConfigDir, name+".conf"), []byte("[Guest]\nRootImage="+root+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCowMergeInPlace(t *testing.T) {
	dir := testbed.PhysicalTempDir(t)
	backing, cowPath := cowFixture(t, dir)
	before, err := os.ReadFile(backing)
	if err != nil {
		t.Fatal(err)
	}
	env, stdout, stderr := cowEnv(t)
	writeGuest(t, env, "web", backing)
	writeGuest(t, env, "db", backing)
	writeGuest(t, env, "other", filepath.Join(dir, "other.img"))

	// Without --yes and without a terminal: refused, nothing changed.
	if st := exitOf(env, "cow", "merge", "--in-place", cowPath); st != ExitUsage {
		t.Errorf("merge --in-place without --yes: exit status %d, want %d", st, ExitUsage)
	}
	wantWarning := "Warning: merging " + cowPath + " into " + backing + " in place changes " + backing +
		": every other COW file on it becomes invalid, and the guests using them will not boot.\n" +
		"Guests with RootImage=" + backing + ": db, web.\n"
	wantRefusal := "umlctl: standard input is not a terminal to confirm the merge in place on; pass --yes to confirm it\n"
	if diff := cmp.Diff(wantWarning+wantRefusal, stderr.String()); diff != "" {
		t.Errorf("stderr (-want +got):\n%s", diff)
	}
	if after, err := os.ReadFile(backing); err != nil || !bytes.Equal(before, after) {
		t.Fatalf("the backing file changed without confirmation (%v)", err)
	}

	stderr.Reset()
	if st := exitOf(env, "cow", "merge", "--in-place", "-y", cowPath); st != 0 {
		t.Fatalf("merge --in-place -y: exit status %d, stderr:\n%s", st, stderr)
	}
	if diff := cmp.Diff(wantWarning, stderr.String()); diff != "" {
		t.Errorf("stderr (-want +got):\n%s", diff)
	}
	if want := "Merged " + cowPath + " into " + backing + ": 3 sectors, 1204 bytes (1.2 KiB), from the COW file"; !strings.Contains(stdout.String(), want) {
		t.Errorf("stdout:\n%s\nwant it to contain %q", stdout, want)
	}
	after, err := os.ReadFile(backing)
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(before)
	for _, i := range []int{1, 2} { // the partial sector 10 is not merged, as by uml_moo
		copy(want[i*512:(i+1)*512], bytes.Repeat([]byte("guest   "), 64))
	}
	if !bytes.Equal(after, want) {
		t.Errorf("backing file after the merge is not the backing file with sectors 1 and 2 from the COW file")
	}
	// The COW file is now invalid.
	if err := exitOf(env, "cow", "merge", "--in-place", "-y", cowPath); err != ExitFailure {
		t.Errorf("second merge in place: exit status %d, want %d", err, ExitFailure)
	}
}

func TestWithGuests(t *testing.T) {
	env, _, _ := cowEnv(t)
	writeGuest(t, env, "web", "/srv/root.img")
	inUse := &cow.InUseError{Role: "backing file", Path: "/srv/root.img", PID: 42}
	err := withGuests(env, fmt.Errorf("merging: %w", inUse))
	want := "merging: backing file /srv/root.img is in use by process 42 (a running guest?); stop the guest first (umlctl stop NAME); guests configured with it: web (umlctl stop web)"
	if err == nil || err.Error() != want {
		t.Errorf("withGuests: %v\nwant %s", err, want)
	}
	if !errors.As(err, &inUse) {
		t.Errorf("withGuests lost the InUseError")
	}
}

// TestCowMergeInPlaceForgedBacking merges in place a COW file whose header
// names a file no guest uses as RootImage=, as one its guest forged to name
// the C library would.
func TestCowMergeInPlaceForgedBacking(t *testing.T) {
	const (
		forged = "libc.so.6\x1b[2K" // with an escape sequence, shown escaped
		plain  = "root.img"         // uml.conf(5) takes no control characters
	)
	tests := []struct {
		name   string
		file   string                           // the backing file's name
		root   func(dir, backing string) string // the guest's RootImage=
		args   func(backing string) []string    // after merge --in-place -y
		want   int
		stderr string // the last line; BACKING, CONF for the paths
	}{
		{"no guest uses it", forged, func(dir, _ string) string { return filepath.Join(dir, "other.img") }, func(string) []string { return nil }, ExitFailure,
			"umlctl: COW file COW names backing file BACKING, which no guest in CONF uses as RootImage=; a COW file can be forged by its guest, so umlctl does not write into a file it names; give the backing file explicitly with --backing if you mean it\n"},
		{"named with --backing", forged, func(dir, _ string) string { return filepath.Join(dir, "other.img") }, func(b string) []string { return []string{"--backing", b} }, 0,
			"No guest configured in CONF has RootImage=BACKING.\n"},
		{"a guest's RootImage=", plain, func(_, b string) string { return b }, func(string) []string { return nil }, 0,
			"Guests with RootImage=BACKING: g.\n"},
		{"a guest's RootImage= through a link", plain, func(dir, b string) string {
			link := filepath.Join(dir, "link.img")
			if err := os.Symlink(b, link); err != nil {
				t.Fatal(err)
			}
			return link
		}, func(string) []string { return nil }, 0, "Guests with RootImage=BACKING: g.\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := testbed.PhysicalTempDir(t)
			backing, cowPath := cowFixtureOn(t, dir, tt.file)
			before, err := os.ReadFile(backing)
			if err != nil {
				t.Fatal(err)
			}
			env, _, stderr := cowEnv(t)
			writeGuest(t, env, "g", tt.root(dir, backing))
			args := append([]string{"cow", "merge", "--in-place", "-y"}, tt.args(backing)...)
			if st := exitOf(env, append(args, cowPath)...); st != tt.want {
				t.Errorf("exit status %d, want %d; stderr:\n%s", st, tt.want, stderr)
			}
			lines := strings.SplitAfter(stderr.String(), "\n")
			got := strings.NewReplacer(cowPath, "COW", filepath.Join(dir, printable.Line(tt.file)), "BACKING", env.ConfigDir, "CONF").Replace(lines[max(0, len(lines)-2)])
			if diff := cmp.Diff(tt.stderr, got); diff != "" {
				t.Errorf("last line of stderr (-want +got):\n%s", diff)
			}
			after, err := os.ReadFile(backing)
			if err != nil {
				t.Fatal(err)
			}
			if changed := !bytes.Equal(before, after); changed != (tt.want == 0) {
				t.Errorf("backing file changed: %v, want %v", changed, tt.want == 0)
			}
		})
	}
}

// TestCowSpecialFiles checks that cow info and merge refuse a FIFO or a
// device as the COW or backing file without opening it: opening a FIFO
// blocks, and a device's open can have side effects.
func TestCowSpecialFiles(t *testing.T) {
	dir := testbed.PhysicalTempDir(t)
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	_, cowPath := cowFixture(t, dir)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"info of a FIFO", []string{"cow", "info", fifo}, "umlctl: reading COW file FIFO: COW file FIFO is a named pipe (FIFO), not a regular file, so it is not opened; name a regular file instead\n"},
		{"info of /dev/null", []string{"cow", "info", "/dev/null"}, "umlctl: reading COW file /dev/null: COW file /dev/null is a character device, not a regular file, so it is not opened; name a regular file instead\n"},
		{"merge of a FIFO", []string{"cow", "merge", fifo, filepath.Join(dir, "new.img")}, "umlctl: merging COW file FIFO: COW file FIFO is a named pipe (FIFO), not a regular file, so it is not opened; name a regular file instead\n"},
		{"merge on a FIFO", []string{"cow", "merge", "--backing", fifo, cowPath, filepath.Join(dir, "new.img")}, "umlctl: merging COW file COW: opening the backing file: backing file FIFO is a named pipe (FIFO), not a regular file, so it is not opened; name a regular file instead\n"},
		{"merge in place into /dev/null", []string{"cow", "merge", "--in-place", "-y", "--backing", "/dev/null", cowPath}, "umlctl: merging COW file COW in place: opening the backing file: backing file /dev/null is a character device, not a regular file, so it is not opened; name a regular file instead\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, _, stderr := cowEnv(t)
			done := make(chan int, 1)
			go func() { done <- exitOf(env, tt.args...) }()
			select {
			case st := <-done:
				if st != ExitFailure {
					t.Errorf("exit status %d, want %d", st, ExitFailure)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("still running after 5 s")
			}
			lines := strings.SplitAfter(stderr.String(), "\n")
			got := strings.NewReplacer(fifo, "FIFO", cowPath, "COW").Replace(lines[max(0, len(lines)-2)])
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("last line of stderr (-want +got):\n%s", diff)
			}
		})
	}
}

// TestCowHugeHeader checks cow info and merge on a COW file whose header
// claims a backing file of 8000 GiB, with a bitmap of 2 GiB: they must not
// read it whole.
func TestCowHugeHeader(t *testing.T) {
	dir := testbed.PhysicalTempDir(t)
	backing, cowPath := cowFixture(t, dir)
	f, err := os.OpenFile(cowPath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	var size [8]byte
	binary.BigEndian.PutUint64(size[:], 8000<<30)
	_, err = f.WriteAt(size[:], 12) // a version 3 header's size field
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	h, err := cow.Read(cowPath)
	if err != nil {
		t.Fatal(err)
	}
	if h.BitmapLen != 2097152000 {
		t.Fatalf("bitmap of %d bytes, want 2097152000", h.BitmapLen)
	}
	if err := os.Truncate(cowPath, h.DataOffset); err != nil { // the whole bitmap
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want int
	}{
		{"info", []string{"cow", "info", cowPath}, 0},
		{"merge", []string{"cow", "merge", cowPath, filepath.Join(dir, "new.img")}, ExitFailure},
		{"merge in place", []string{"cow", "merge", "--in-place", "-y", "--backing", backing, cowPath}, ExitFailure},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, _, stderr := cowEnv(t)
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			start := time.Now()
			st := exitOf(env, tt.args...)
			elapsed := time.Since(start)
			runtime.ReadMemStats(&after)
			if st != tt.want {
				t.Errorf("exit status %d, want %d; stderr:\n%s", st, tt.want, stderr)
			}
			if n := after.TotalAlloc - before.TotalAlloc; n > 16<<20 {
				t.Errorf("allocated %d bytes, want at most 16 MiB", n)
			}
			if elapsed > 5*time.Second {
				t.Errorf("took %v, want at most 5 s", elapsed)
			}
			if want := "its size is 5300 bytes, the COW header says 8589934592000"; tt.want != 0 && !strings.Contains(stderr.String(), want) {
				t.Errorf("stderr:\n%s\nwant it to contain %q", stderr, want)
			}
		})
	}
}
