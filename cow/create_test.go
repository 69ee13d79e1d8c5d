package cow

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"umlsd/internal/testbed"
)

const fixtureMTime = 1700000000

// writeBacking makes a backing file of size bytes, data (not a hole) unless
// sparse, with mtime fixtureMTime.
func writeBacking(t *testing.T, path string, size int64, sparse bool) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if sparse {
		err = f.Truncate(size)
	} else {
		_, err = f.Write(bytes.Repeat([]byte{0xa5}, int(size)))
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chtimes(path, time.Now(), time.Unix(fixtureMTime, 0))
	}
	if err != nil {
		t.Fatal(err)
	}
}

// mkcow runs `uml_mkcow cow backing` in the working directory.
func mkcow(t *testing.T, cow, backing string) {
	t.Helper()
	out, err := exec.Command("uml_mkcow", cow, backing).CombinedOutput()
	if err != nil {
		t.Fatalf("uml_mkcow %s %s: %v\n%s", cow, backing, err, out)
	}
}

// sameFile fails the test unless got has want's bytes, length, mode and
// allocated blocks.
func sameFile(t *testing.T, want, got string) {
	t.Helper()
	var ws, gs unix.Stat_t
	if err := unix.Stat(want, &ws); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(got, &gs); err != nil {
		t.Fatal(err)
	}
	type shape struct {
		Size   int64
		Blocks int64
		Mode   uint32
	}
	if diff := cmp.Diff(shape{ws.Size, ws.Blocks, ws.Mode}, shape{gs.Size, gs.Blocks, gs.Mode}); diff != "" {
		t.Errorf("%s is not shaped like uml_mkcow's %s (-uml_mkcow +Create):\n%s", got, want, diff)
	}
	wf, err := os.Open(want)
	if err != nil {
		t.Fatal(err)
	}
	defer wf.Close()
	gf, err := os.Open(got)
	if err != nil {
		t.Fatal(err)
	}
	defer gf.Close()
	wb, gb := make([]byte, 1<<20), make([]byte, 1<<20)
	for off := int64(0); ; off += int64(len(wb)) {
		wn, werr := io.ReadFull(wf, wb)
		gn, gerr := io.ReadFull(gf, gb)
		if !bytes.Equal(wb[:wn], gb[:gn]) {
			i := 0
			for i < min(wn, gn) && wb[i] == gb[i] {
				i++
			}
			t.Fatalf("%s differs from uml_mkcow's %s at byte %d", got, want, off+int64(i))
		}
		if werr != nil || gerr != nil {
			if werr != gerr && !(errors.Is(werr, io.ErrUnexpectedEOF) && errors.Is(gerr, io.ErrUnexpectedEOF)) {
				t.Fatalf("reading %s and %s: %v, %v", want, got, werr, gerr)
			}
			return
		}
	}
}

func TestCreateAsUMLMkcow(t *testing.T) {
	testbed.RequireCommands(t, "uml_mkcow")
	if os.Getpagesize() != 4096 {
		t.Skipf("the expected layouts are for 4 KiB pages, uml_mkcow's alignment here; this machine has %d", os.Getpagesize())
	}
	tests := []struct {
		name   string
		size   int64
		sparse bool
		// The layout the header gives: bitmap at 8192 (4128 rounded up to
		// the page), one bit per 512-byte sector.
		bitmapLen, dataOffset int64
	}{
		{"empty", 0, false, 0, 8192},
		{"one sector", 512, false, 1, 12288},
		{"not a multiple of 512", 1000, false, 1, 12288},
		{"1 MiB", 1 << 20, false, 256, 12288},
		{"1 GiB sparse", 1 << 30, true, 262144, 270336},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := testbed.PhysicalTempDir(t)
			backing := filepath.Join(dir, "root.img")
			writeBacking(t, backing, tt.size, tt.sparse)
			ref, got := filepath.Join(dir, "ref.cow"), filepath.Join(dir, "got.cow")
			mkcow(t, ref, backing)
			if err := Create(got, backing); err != nil {
				t.Fatalf("Create: %v", err)
			}
			sameFile(t, ref, got)

			h, err := Read(ref)
			if err != nil {
				t.Fatal(err)
			}
			want := Header{
				Version: 3, Backing: backing, MTime: fixtureMTime, Size: tt.size, SectorSize: 512, Alignment: 4096,
				BitmapOffset: 8192, BitmapLen: tt.bitmapLen, DataOffset: tt.dataOffset,
			}
			if diff := cmp.Diff(want, h); diff != "" {
				t.Errorf("ReadHeader of uml_mkcow's COW file (-want +got):\n%s", diff)
			}
			if fi, err := os.Stat(ref); err != nil || fi.Size() != tt.dataOffset+tt.size {
				t.Errorf("uml_mkcow's COW file: %v, %v; want %d bytes, the data offset plus the backing file's size", fi.Size(), err, tt.dataOffset+tt.size)
			}
			fi, err := os.Stat(backing)
			if err != nil {
				t.Fatal(err)
			}
			if err := h.Matches(fi); err != nil {
				t.Errorf("Matches on a fresh COW file: %v", err)
			}
		})
	}
}

// TestCreatePathsAsUMLMkcow checks that Create makes the backing file's
// path absolute as uml_mkcow does: the directory without symbolic links,
// taken physically, the last element as given.
func TestCreatePathsAsUMLMkcow(t *testing.T) {
	testbed.RequireCommands(t, "uml_mkcow")
	dir := testbed.PhysicalTempDir(t)
	for _, d := range []string{"real/deep/a", "cows"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeBacking(t, filepath.Join(dir, "real/root.img"), 1000, false)
	writeBacking(t, filepath.Join(dir, "real/deep/root.img"), 3000, false)
	for link, target := range map[string]string{"lnk": "real", "s": "real/deep/a", "link.img": "real/root.img"} {
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name, cwd, backing, want string
	}{
		{"relative", "", "real/root.img", "real/root.img"},
		{"no slash", "real", "root.img", "real/root.img"},
		{"dot elements", "", "./real/./root.img", "real/root.img"},
		{"directory a symbolic link", "", "lnk/root.img", "real/root.img"},
		{"dot-dot after a symbolic link is physical", "", "s/../root.img", "real/deep/root.img"},
		{"last element a symbolic link", "", "link.img", "link.img"},
		{"working directory through a symbolic link", "lnk", "root.img", "real/root.img"},
		{"absolute through a symbolic link", "", filepath.Join(dir, "lnk/root.img"), "real/root.img"},
		{"dot-dot", "real/deep", "../root.img", "real/root.img"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Chdir(filepath.Join(dir, tt.cwd))
			ref := filepath.Join(dir, "cows", strings.Repeat("r", i+1))
			got := filepath.Join(dir, "cows", strings.Repeat("g", i+1))
			mkcow(t, ref, tt.backing)
			if err := Create(got, tt.backing); err != nil {
				t.Fatalf("Create: %v", err)
			}
			sameFile(t, ref, got)
			h, err := Read(got)
			if err != nil {
				t.Fatal(err)
			}
			if want := filepath.Join(dir, tt.want); h.Backing != want {
				t.Errorf("Create(%s) stored the backing file %s, want %s", tt.backing, h.Backing, want)
			}
		})
	}
}

func TestCreateRefuses(t *testing.T) {
	dir := testbed.PhysicalTempDir(t)
	backing := filepath.Join(dir, "root.img")
	writeBacking(t, backing, 1000, false)
	existing := filepath.Join(dir, "existing.cow")
	if err := os.WriteFile(existing, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(dir, "old.img")
	writeBacking(t, old, 512, false)
	if err := os.Chtimes(old, time.Now(), time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	future := filepath.Join(dir, "future.img")
	writeBacking(t, future, 512, false)
	if err := os.Chtimes(future, time.Now(), time.Unix(math.MaxUint32+1, 0)); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name, cow, backing, want string
	}{
		{"existing COW file", existing, backing, "creating COW file: open " + existing + ": file exists"},
		{"missing backing file", "missing.cow", filepath.Join(dir, "missing.img"),
			"creating COW file missing.cow: stat " + dir + "/missing.img: no such file or directory"},
		{"missing directory", "nodir.cow", filepath.Join(dir, "nodir/root.img"),
			"creating COW file nodir.cow: resolving the directory of the backing file " + dir + "/nodir: no such file or directory"},
		{"directory in the path is a file", "file.cow", backing + "/root.img",
			"creating COW file file.cow: resolving the directory of the backing file " + backing + ": not a directory"},
		{"backing file a directory", "dir.cow", dir + "/",
			"creating COW file dir.cow: backing file " + dir + "/ is not a regular file"},
		{"backing file a device", "null.cow", "/dev/null",
			"creating COW file null.cow: backing file /dev/null is not a regular file"},
		{"mtime before 1970", "old.cow", old,
			"creating COW file old.cow: backing file " + old + " has mtime 1960-01-01 00:00:00 UTC (-315619200), which a COW header cannot store (it keeps 32 bits), so the kernel would refuse the COW file; touch the backing file first"},
		{"mtime after 2106", "future.cow", future,
			"creating COW file future.cow: backing file " + future + " has mtime 2106-02-07 06:28:16 UTC (4294967296), which a COW header cannot store (it keeps 32 bits), so the kernel would refuse the COW file; touch the backing file first"},
		{"path too long", "long.cow", "/" + strings.Repeat("a", 4095),
			"creating COW file long.cow: backing file path is 4096 bytes, longer than the 4095 a COW header holds"},
		{"NUL in the path", "nul.cow", dir + "/root.img\x00x",
			"creating COW file nul.cow: backing file path \"" + dir + "/root.img\\x00x\" contains a NUL byte"},
		{"COW file in a missing directory", filepath.Join(dir, "nodir/x.cow"), backing,
			"creating COW file: open " + dir + "/nodir/x.cow: no such file or directory"},
	}
	t.Chdir(dir)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Create(tt.cow, tt.backing)
			if err == nil {
				t.Fatalf("Create(%s, %s) succeeded, want error %q", tt.cow, tt.backing, tt.want)
			}
			if diff := cmp.Diff(tt.want, err.Error()); diff != "" {
				t.Errorf("Create error (-want +got):\n%s", diff)
			}
			if tt.cow == existing {
				if b, err := os.ReadFile(existing); err != nil || string(b) != "precious" {
					t.Errorf("Create changed the existing file: %q, %v", b, err)
				}
			} else if _, err := os.Lstat(tt.cow); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("Create left %s behind: %v", tt.cow, err)
			}
		})
	}
}

// TestCreateTooLarge: the kernel keeps the data offset in an int, so a
// backing file beyond about 8 TiB cannot have a COW file.
func TestCreateTooLarge(t *testing.T) {
	dir := testbed.PhysicalTempDir(t)
	backing := filepath.Join(dir, "huge.img")
	f, err := os.Create(backing)
	if err != nil {
		t.Fatal(err)
	}
	err = f.Truncate(9 << 40)
	f.Close()
	if err != nil {
		t.Skipf("this file system has no sparse 9 TiB files: %v", err)
	}
	cow := filepath.Join(dir, "huge.cow")
	err = Create(cow, backing)
	want := "creating COW file " + cow + ": a backing file of 9895604649984 bytes needs its data at offset 2415927296, beyond the 2147483647 the kernel can address"
	if err == nil || err.Error() != want {
		t.Errorf("Create error = %v, want %q", err, want)
	}
	if _, err := os.Lstat(cow); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Create left %s behind: %v", cow, err)
	}
}

// TestCreateRemovesPartialFile makes the last write fail (a file size limit
// below the COW file's length) after the header was written.
func TestCreateRemovesPartialFile(t *testing.T) {
	dir := testbed.PhysicalTempDir(t)
	backing := filepath.Join(dir, "root.img")
	writeBacking(t, backing, 1<<30, true)

	// The limit is the process's: this test is not parallel, so no other
	// test of the package runs meanwhile. Go ignores SIGXFSZ, so the write
	// fails with EFBIG.
	var saved unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_FSIZE, &saved); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setrlimit(unix.RLIMIT_FSIZE, &unix.Rlimit{Cur: 1 << 20, Max: saved.Max}); err != nil {
		t.Fatal(err)
	}
	cow := filepath.Join(dir, "root.cow")
	err := Create(cow, backing)
	if rerr := unix.Setrlimit(unix.RLIMIT_FSIZE, &saved); rerr != nil {
		t.Fatal(rerr)
	}
	if !errors.Is(err, syscall.EFBIG) {
		t.Fatalf("Create with a 1 MiB file size limit: %v, want EFBIG", err)
	}
	if !strings.HasPrefix(err.Error(), "creating COW file: write "+cow+": ") {
		t.Errorf("Create error %q does not say what it did to which file", err)
	}
	if _, err := os.Lstat(cow); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Create left %s behind: %v", cow, err)
	}
}

func TestMatchesAfterChange(t *testing.T) {
	dir := testbed.PhysicalTempDir(t)
	backing := filepath.Join(dir, "root.img")
	writeBacking(t, backing, 1<<20, false)
	cow := filepath.Join(dir, "root.cow")
	if err := Create(cow, backing); err != nil {
		t.Fatal(err)
	}
	h, err := Read(cow)
	if err != nil {
		t.Fatal(err)
	}
	check := func(what string, want ...string) {
		t.Helper()
		fi, err := os.Stat(backing)
		if err != nil {
			t.Fatal(err)
		}
		err = h.Matches(fi)
		if len(want) == 0 {
			if err != nil {
				t.Errorf("%s: Matches: %v", what, err)
			}
			return
		}
		if err == nil {
			t.Fatalf("%s: Matches succeeded, want an error saying %q", what, want)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: Matches error %q does not say %q", what, err, w)
			}
		}
		t.Logf("%s: %v", what, err)
	}
	check("fresh")

	// touch
	if err := os.Chtimes(backing, time.Now(), time.Now()); err != nil {
		t.Fatal(err)
	}
	check("touched", "it was modified at ", "the COW header says 2023-11-14 22:13:20 UTC (1700000000)", "touch -d @1700000000 "+backing)
	if err := os.Chtimes(backing, time.Now(), time.Unix(fixtureMTime, 0)); err != nil {
		t.Fatal(err)
	}
	check("mtime restored")

	// A size change, then the mtime put back: only the size differs.
	if err := os.Truncate(backing, 2<<20); err != nil {
		t.Fatal(err)
	}
	check("grown", "its size is 2097152 bytes, the COW header says 1048576", "it was modified at ")
	if err := os.Chtimes(backing, time.Now(), time.Unix(fixtureMTime, 0)); err != nil {
		t.Fatal(err)
	}
	check("grown, mtime restored", "its size is 2097152 bytes, the COW header says 1048576; the kernel refuses")
}
