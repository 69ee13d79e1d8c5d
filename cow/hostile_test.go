package cow

// Tests of COW files a hostile guest wrote: its header can name any path,
// claim any size, and hold escape sequences.

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
	"umlsd/internal/testbed"
	"unicode"

	"golang.org/x/sys/unix"
)

// anyBacking lets MergeInPlace write into the backing file a header names.
func anyBacking(fs.FileInfo) error { return nil }

// hostileCOW writes a version 3 COW file whose header claims a backing
// file of size bytes at backing, length bytes long (a hole but for the
// header and bits), with the bitmap bytes of bits.
func hostileCOW(t *testing.T, path, backing string, size, length int64, bits map[int64]byte) Header {
	t.Helper()
	head := rawHeader{version: 3, mtime: fixtureMTime, size: uint64(size), sectorSize: 512, align: 4096, path: backing}.encode()
	h, err := ReadHeader(bytes.NewReader(head))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(head, 0); err != nil {
		t.Fatal(err)
	}
	for i, b := range bits {
		if _, err := f.WriteAt([]byte{b}, h.BitmapOffset+i); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(length); err != nil {
		t.Fatal(err)
	}
	return h
}

// allocated runs f and returns how many bytes the heap allocated meanwhile.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// within fails the test unless f returns within d; a blocked f is left
// behind.
func within(t *testing.T, d time.Duration, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("still running after %v", d)
	}
}

const huge = 8000 << 30 // what a hostile header claims: a 2 GiB bitmap

func TestReadInfoHugeHeader(t *testing.T) {
	dir := testbed.PhysicalTempDir(t)
	backing := filepath.Join(dir, "root.img")
	makeBacking(t, backing, 64<<10, backingKinds[1])
	tests := []struct {
		name     string
		length   func(h Header) int64 // of the COW file
		bits     map[int64]byte
		wantErr  string
		wantInfo [2]int64 // dirty sectors and bytes
	}{
		// The whole bitmap is there, a hole but for a byte at each end.
		{"sparse", func(h Header) int64 { return h.DataOffset }, map[int64]byte{0: 1, 2097151999: 0x80}, "", [2]int64{2, 1024}},
		{"truncated", func(Header) int64 { return 8192 }, nil, "the file is shorter than its header says", [2]int64{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cowPath := filepath.Join(dir, tt.name+".cow")
			probe := hostileCOW(t, filepath.Join(t.TempDir(), "probe.cow"), backing, huge, 0, nil)
			if probe.BitmapLen != 2097152000 {
				t.Fatalf("a header claiming %d bytes has a bitmap of %d bytes, want 2097152000", int64(huge), probe.BitmapLen)
			}
			hostileCOW(t, cowPath, backing, huge, tt.length(probe), tt.bits)
			var (
				in  Info
				err error
			)
			start := time.Now()
			n := allocated(func() { in, err = ReadInfo(cowPath) })
			t.Logf("ReadInfo: %v, %d bytes allocated", time.Since(start), n)
			if n > 16<<20 {
				t.Errorf("ReadInfo allocated %d bytes, want at most 16 MiB", n)
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("ReadInfo: %v, want an error with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := [2]int64{in.DirtySectors, in.DirtyBytes}; got != tt.wantInfo {
				t.Errorf("dirty sectors and bytes: %v, want %v", got, tt.wantInfo)
			}
			if in.BackingProblem == nil || !strings.Contains(in.BackingProblem.Error(), "its size is 65536 bytes, the COW header says 8589934592000") {
				t.Errorf("backing problem: %v, want the size's", in.BackingProblem)
			}
		})
	}
}

func TestMergeHugeHeader(t *testing.T) {
	dir := testbed.PhysicalTempDir(t)
	backing := filepath.Join(dir, "root.img")
	makeBacking(t, backing, 64<<10, backingKinds[1])
	cowPath := filepath.Join(dir, "root.cow")
	h := hostileCOW(t, cowPath, backing, huge, 8192, nil) // a header only
	hostileCOW(t, cowPath+".full", backing, huge, h.DataOffset, map[int64]byte{0: 0xff})
	for _, tt := range []struct {
		name  string
		merge func(cowPath string) error
	}{
		{"merge", func(c string) error {
			return Merge(context.Background(), c, filepath.Join(dir, "new.img"), MergeOptions{})
		}},
		{"in place", func(c string) error {
			return MergeInPlace(context.Background(), c, MergeOptions{BackingWritable: anyBacking})
		}},
	} {
		for _, c := range []string{cowPath, cowPath + ".full"} {
			t.Run(tt.name+"/"+filepath.Ext(c), func(t *testing.T) {
				var err error
				within(t, 10*time.Second, func() {
					if n := allocated(func() { err = tt.merge(c) }); n > 16<<20 {
						t.Errorf("allocated %d bytes, want at most 16 MiB", n)
					}
				})
				if want := "its size is 65536 bytes, the COW header says 8589934592000"; err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("merge: %v, want an error with %q", err, want)
				}
			})
		}
	}
	noTemporaryFiles(t, dir)
}

// TestMergeReadsBitmapInChunks merges a 64 GiB image (holes, but for a
// sector at each end), whose bitmap is 16 MiB: the merges read it a chunk
// at a time.
func TestMergeReadsBitmapInChunks(t *testing.T) {
	const size = 64 << 30
	dir := testbed.PhysicalTempDir(t)
	backing := filepath.Join(dir, "root.img")
	makeBacking(t, backing, size, backingKinds[0])
	cowPath := filepath.Join(dir, "root.cow")
	last := int64(size/512 - 1)
	makeCOW(t, cowPath, backing, 3, size, map[int64][]byte{0: sectorData(0, 'c'), last: sectorData(last, 'c')})
	check := func(t *testing.T, path string) {
		t.Helper()
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for _, i := range []int64{0, last} {
			b := make([]byte, 512)
			if _, err := f.ReadAt(b, i*512); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b, sectorData(i, 'c')) {
				t.Errorf("%s: sector %d is not the COW file's", filepath.Base(path), i)
			}
		}
	}
	for _, tt := range []struct {
		name   string
		merge  func() error
		result string
	}{
		{"merge", func() error {
			return Merge(context.Background(), cowPath, filepath.Join(dir, "new.img"), MergeOptions{})
		}, filepath.Join(dir, "new.img")},
		{"in place", func() error { return MergeInPlace(context.Background(), cowPath, MergeOptions{Backing: backing}) }, backing},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			n := allocated(func() { err = tt.merge() })
			if err != nil {
				t.Fatal(err)
			}
			if n > 8<<20 {
				t.Errorf("allocated %d bytes for a bitmap of 16 MiB, want at most 8 MiB", n)
			}
			check(t, tt.result)
		})
	}
}

func TestSpecialFilesRefused(t *testing.T) {
	dir := testbed.PhysicalTempDir(t)
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	backing := filepath.Join(dir, "root.img")
	makeBacking(t, backing, 64<<10, backingKinds[1])
	cowPath := filepath.Join(dir, "root.cow")
	makeCOW(t, cowPath, backing, 3, 64<<10, nil)
	onFIFO, onNull := filepath.Join(dir, "fifo.cow"), filepath.Join(dir, "null.cow")
	makeCOW(t, onFIFO, fifo, 3, 64<<10, nil)
	makeCOW(t, onNull, "/dev/null", 3, 64<<10, nil)
	newPath := filepath.Join(dir, "new.img")
	const isFIFO, isNull = "fifo is a named pipe (FIFO), not a regular file", "/dev/null is a character device, not a regular file"

	tests := []struct {
		name string
		run  func() error
		want string
	}{
		{"merge, header names a FIFO", func() error { return Merge(context.Background(), onFIFO, newPath, MergeOptions{}) }, isFIFO},
		{"merge, --backing a FIFO", func() error { return Merge(context.Background(), cowPath, newPath, MergeOptions{Backing: fifo}) }, isFIFO},
		{"merge, header names /dev/null", func() error { return Merge(context.Background(), onNull, newPath, MergeOptions{}) }, isNull},
		{"merge in place, header names a FIFO", func() error {
			return MergeInPlace(context.Background(), onFIFO, MergeOptions{BackingWritable: anyBacking})
		}, isFIFO},
		{"merge in place, --backing /dev/null", func() error {
			return MergeInPlace(context.Background(), cowPath, MergeOptions{Backing: "/dev/null"})
		}, isNull},
		{"merge of a FIFO", func() error { return Merge(context.Background(), fifo, newPath, MergeOptions{}) }, isFIFO},
		{"merge in place of /dev/null", func() error { return MergeInPlace(context.Background(), "/dev/null", MergeOptions{Backing: backing}) }, isNull},
		{"info of a FIFO", func() error { _, err := ReadInfo(fifo); return err }, isFIFO},
		{"info of /dev/null", func() error { _, err := ReadInfo("/dev/null"); return err }, isNull},
		{"header of a FIFO", func() error { _, err := Read(fifo); return err }, isFIFO},
		{"info, header names a FIFO", func() error {
			in, err := ReadInfo(onFIFO)
			if err != nil {
				return err
			}
			return in.BackingProblem
		}, "fifo is a named pipe (FIFO), not a regular file; the kernel cannot use it"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			within(t, 5*time.Second, func() { err = tt.run() })
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error with %q", err, tt.want)
			}
		})
	}
	if _, err := os.Lstat(newPath); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s: %v, want it absent", newPath, err)
	}
	noTemporaryFiles(t, dir)
}

func TestMergeInPlaceRefusesHeaderBacking(t *testing.T) {
	dir := testbed.PhysicalTempDir(t)
	backing := filepath.Join(dir, "root.img")
	makeBacking(t, backing, 64<<10, backingKinds[1])
	cowPath := filepath.Join(dir, "root.cow")
	makeCOW(t, cowPath, backing, 3, 64<<10, map[int64][]byte{3: sectorData(3, 'c')})
	before := readFile(t, backing)
	want, err := os.Stat(backing)
	if err != nil {
		t.Fatal(err)
	}
	var asked fs.FileInfo
	tests := []struct {
		name     string
		writable func(fs.FileInfo) error
		want     string
	}{
		{"nobody vouches", nil, "COW file " + cowPath + " names backing file " + backing + ", and a COW file can be forged by its guest, so the merge does not write into a file it names"},
		{"the caller refuses", func(fi fs.FileInfo) error {
			asked = fi
			return errors.New("not a guest's root image")
		}, "not a guest's root image"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := MergeInPlace(context.Background(), cowPath, MergeOptions{BackingWritable: tt.writable})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("MergeInPlace: %v, want an error with %q", err, tt.want)
			}
			if !bytes.Equal(before, readFile(t, backing)) || mtime(t, backing) != fixtureMTime {
				t.Errorf("the refused merge changed the backing file")
			}
		})
	}
	if asked == nil || !os.SameFile(asked, want) {
		t.Errorf("BackingWritable was asked about %v, want the backing file", asked)
	}
}

// TestHeaderPathsPrintable checks the errors that name the path a header
// holds: its escape sequences are escaped.
func TestHeaderPathsPrintable(t *testing.T) {
	dir := testbed.PhysicalTempDir(t)
	const evil = "\x1b[1A\x1b[2K\rroot.img\nall is well"
	const shown = `\x1b[1A\x1b[2K\rroot.img\nall is well`
	backing := filepath.Join(dir, evil)
	fifo := filepath.Join(dir, "fifo\x1b[2J")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.cow")
	makeCOW(t, missing, backing, 3, 64<<10, nil)
	onFIFO := filepath.Join(dir, "fifo.cow")
	makeCOW(t, onFIFO, fifo, 3, 64<<10, nil)
	present := filepath.Join(dir, "present.cow")
	makeCOW(t, present, backing, 3, 64<<10, nil)
	makeBacking(t, backing, 32<<10, backingKinds[1]) // of another size
	h, err := Read(present)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(backing)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(backing, backing+".away"); err != nil {
		t.Fatal(err)
	}
	in, err := ReadInfo(missing)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(backing+".away", backing); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		err  error
		want string // escaped
	}{
		{"info, missing backing file", in.BackingProblem, shown},
		{"matches", h.Matches(fi), shown},
		{"in use", &InUseError{Role: "backing file", Path: backing, PID: 42}, shown},
		{"merge, backing file of another size", Merge(context.Background(), present, filepath.Join(dir, "new.img"), MergeOptions{}), shown},
		{"merge, backing file a FIFO", Merge(context.Background(), onFIFO, filepath.Join(dir, "new.img"), MergeOptions{}), `fifo\x1b[2J`},
		{"merge in place, nobody vouches", MergeInPlace(context.Background(), present, MergeOptions{}), shown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.err == nil {
				t.Fatal("no error")
			}
			msg := tt.err.Error()
			if !strings.Contains(msg, tt.want) {
				t.Errorf("error %q does not name the path as %q", msg, tt.want)
			}
			if i := strings.IndexFunc(msg, func(r rune) bool { return !unicode.IsPrint(r) }); i >= 0 {
				t.Errorf("error %q has an unprintable character at byte %d", msg, i)
			}
		})
	}
}
