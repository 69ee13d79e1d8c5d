package cow

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"umlsd/internal/testbed"
)

// sectorData is a recognisable non-zero sector: its number and a tag.
func sectorData(i int64, tag byte) []byte {
	b := bytes.Repeat([]byte{tag}, 512)
	copy(b, fmt.Sprintf("sector %d ", i))
	return b
}

// backingKind writes a backing file's contents into an empty file of the
// right size.
type backingKind struct {
	name  string
	write func(f *os.File, size int64) error
}

var backingKinds = []backingKind{
	{"hole", func(*os.File, int64) error { return nil }},
	{"data with zero sectors", func(f *os.File, size int64) error {
		// Written in full: zero sectors inside data extents, which uml_moo
		// leaves holes for; the partial tail sector too.
		b := make([]byte, size)
		for i := int64(0); i*512 < size; i++ {
			if i%5 != 0 {
				copy(b[i*512:min(size, (i+1)*512)], sectorData(i, 'b'))
			}
		}
		_, err := f.WriteAt(b, 0)
		return err
	}},
	{"sparse", func(f *os.File, size int64) error {
		// Data extents between holes, one of them written zeros.
		for _, at := range []int64{0, 8, 9, 2047, 2048, 2049, 4000, 6000, size/512 - 1} {
			if at*512 >= size {
				continue
			}
			if _, err := f.WriteAt(sectorData(at, 'b')[:min(512, size-at*512)], at*512); err != nil {
				return err
			}
		}
		if at := min(size/2, 100<<10) &^ 511; at+8192 <= size {
			_, err := f.WriteAt(make([]byte, 8192), at)
			return err
		}
		return nil
	}},
}

// makeBacking makes a backing file with fixtureMTime.
func makeBacking(t *testing.T, path string, size int64, kind backingKind) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	err = f.Truncate(size)
	if err == nil {
		err = kind.write(f, size)
	}
	if err == nil { // settle the allocation, for comparisons of blocks
		err = f.Sync()
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

// makeCOW writes a sparse COW file for backing with header version
// version and, for each sector in dirty, its bit set and its data.
func makeCOW(t *testing.T, path, backing string, version uint32, size int64, dirty map[int64][]byte) Header {
	t.Helper()
	raw := rawHeader{version: version, mtime: fixtureMTime, size: uint64(size), sectorSize: 512, path: backing}
	if version == 3 {
		raw.align = 4096
	}
	head := raw.encode()
	h, err := ReadHeader(bytes.NewReader(head))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(head, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(h.DataOffset + size); err != nil {
		t.Fatal(err)
	}
	bitmap := make([]byte, h.BitmapLen)
	for i, data := range dirty {
		if i/8 >= h.BitmapLen {
			t.Fatalf("sector %d has no bit in a version %d bitmap of %d bytes", i, version, h.BitmapLen)
		}
		bitmap[i/8] |= 1 << (i % 8)
		if _, err := f.WriteAt(data, h.DataOffset+i*512); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.WriteAt(bitmap, h.BitmapOffset); err != nil {
		t.Fatal(err)
	}
	return h
}

// moo runs uml_moo with args.
func moo(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("uml_moo", args...).CombinedOutput(); err != nil {
		t.Fatalf("uml_moo %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// sameAsMoo fails the test unless got has want's bytes and length, and
// takes no more blocks, its data (SEEK_DATA) where want has data. (Not its
// mode: a merged image is 0600, uml_moo's 0644.)
func sameAsMoo(t *testing.T, want, got string) {
	t.Helper()
	wd, gd := dataMap(t, want), dataMap(t, got)
	for i := range gd {
		if i < len(wd) && gd[i] && !wd[i] {
			t.Errorf("%s has data at byte %d, where uml_moo's %s has a hole", got, i*512, want)
			break
		}
	}
	var ws, gs unix.Stat_t
	if err := unix.Stat(want, &ws); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(got, &gs); err != nil {
		t.Fatal(err)
	}
	if gs.Size != ws.Size {
		t.Errorf("%s has %d bytes, uml_moo's %s %d", got, gs.Size, want, ws.Size)
	}
	if gs.Blocks > ws.Blocks {
		t.Errorf("%s takes %d blocks, more than uml_moo's %s (%d)", got, gs.Blocks, want, ws.Blocks)
	}
	wb, gb := readFile(t, want), readFile(t, got)
	if !bytes.Equal(wb, gb) {
		i := 0
		for i < min(len(wb), len(gb)) && wb[i] == gb[i] {
			i++
		}
		t.Errorf("%s differs from uml_moo's %s from byte %d (sector %d) on", got, want, i, i/512)
	}
}

// dataMap says for each sector of the file whether SEEK_DATA finds it data.
func dataMap(t *testing.T, path string) []bool {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	m := make([]bool, (fi.Size()+511)/512)
	for off := int64(0); off < fi.Size(); {
		start, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		end, err := unix.Seek(int(f.Fd()), start, unix.SEEK_HOLE)
		if err != nil {
			t.Fatal(err)
		}
		for i := start / 512; i < (end+511)/512 && i < int64(len(m)); i++ {
			m[i] = true
		}
		off = end
	}
	return m
}

// compareDir is a directory for comparisons of allocated blocks: in tmpfs,
// where st_blocks counts data only, if there is one; a disk file system's
// also counts extent tree blocks, which depend on the order of writes.
func compareDir(t *testing.T) string {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs("/dev/shm", &st); err != nil || st.Type != unix.TMPFS_MAGIC {
		return testbed.PhysicalTempDir(t)
	}
	dir, err := os.MkdirTemp("/dev/shm", "cow-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// dirtyCase is a set of sectors in a COW file, as a function of the
// backing file's size.
type dirtyCase struct {
	name  string
	dirty func(size int64) map[int64][]byte
}

var dirtyCases = []dirtyCase{
	{"empty COW", func(int64) map[int64][]byte { return nil }},
	{"last sector dirty", func(size int64) map[int64][]byte {
		last := size/512 - 1
		return map[int64][]byte{last: sectorData(last, 'c')}
	}},
	{"last sector dirty and zero", func(size int64) map[int64][]byte {
		return map[int64][]byte{size/512 - 1: make([]byte, 512)}
	}},
	{"zero sectors over data and holes", func(size int64) map[int64][]byte {
		d := map[int64][]byte{}
		for _, i := range []int64{1, 2, 3, 8, 100, 2047, 2048} {
			if i < size/512 {
				d[i] = make([]byte, 512)
			}
		}
		return d
	}},
	{"runs across chunks", func(size int64) map[int64][]byte {
		d := map[int64][]byte{}
		for _, r := range [][2]int64{{0, 3}, {5, 6}, {2040, 2060}, {4090, 4200}, {size/512 - 9, size/512 - 2}} {
			for i := r[0]; i < r[1]; i++ {
				if i >= 0 && i < size/512 {
					d[i] = sectorData(i, 'c')
				}
			}
		}
		d[7] = make([]byte, 512) // a zero sector in a run
		return d
	}},
	{"partial tail sector dirty", func(size int64) map[int64][]byte {
		// Only when the size is not a multiple of 512: uml_moo drops it.
		return map[int64][]byte{size / 512: sectorData(size/512, 'c'), 10: sectorData(10, 'c')}
	}},
}

// mergeSizes are backing file sizes: chunk multiples and not, whole
// sectors and not, sector counts a multiple of 8 and not (v1 and v2
// bitmaps are a byte short then).
var mergeSizes = []int64{8 << 10, 5 << 10, 3<<20 + 8<<10, 3<<20 + 5<<10 + 300, 1<<20 + 100}

// forEachMergeCase runs test in parallel for every header version, backing
// file size and kind, and set of dirty sectors whose merge uml_moo
// defines.
func forEachMergeCase(t *testing.T, test func(t *testing.T, dir string, version uint32, size int64, kind backingKind, dirty map[int64][]byte)) {
	testbed.RequireCommands(t, "uml_moo")
	for _, version := range []uint32{1, 2, 3} {
		for _, size := range mergeSizes {
			for _, kind := range backingKinds {
				for _, dc := range dirtyCases {
					dirty := dc.dirty(size)
					if !fitsBitmap(version, size, dirty) {
						continue
					}
					t.Run(fmt.Sprintf("v%d/%d/%s/%s", version, size, kind.name, dc.name), func(t *testing.T) {
						t.Parallel()
						test(t, compareDir(t), version, size, kind, dirty)
					})
				}
			}
		}
	}
}

func TestMergeAsUMLMoo(t *testing.T) {
	forEachMergeCase(t, func(t *testing.T, dir string, version uint32, size int64, kind backingKind, dirty map[int64][]byte) {
		backing := filepath.Join(dir, "root.img")
		makeBacking(t, backing, size, kind)
		cowPath := filepath.Join(dir, "root.cow")
		makeCOW(t, cowPath, backing, version, size, dirty)
		want, got := filepath.Join(dir, "moo.img"), filepath.Join(dir, "merged.img")
		moo(t, cowPath, want)
		if err := Merge(context.Background(), cowPath, got, MergeOptions{}); err != nil {
			t.Fatalf("Merge: %v", err)
		}
		sameAsMoo(t, want, got)
		// The COW file holds the guest's secrets: so does the image.
		if fi, err := os.Stat(got); err != nil {
			t.Error(err)
		} else if fi.Mode() != 0o600 {
			t.Errorf("merged image has mode %v, want -rw-------", fi.Mode())
		}
		noTemporaryFiles(t, dir)
	})
}

// fitsBitmap says whether the sectors of dirty have bits in the bitmap of
// a COW file of that version for a backing file of size bytes, and whether
// uml_moo's result is defined: for v1 and v2, the bitmap is a byte short
// when the sector count is not a multiple of 8, and uml_moo reads the bits
// of the last sectors from uninitialised memory after it
// (TestMergeShortBitmap covers them).
func fitsBitmap(version uint32, size int64, dirty map[int64][]byte) bool {
	bitmapLen := (size + 511) / (8 * 512) // v1 and v2: a byte short
	if bitmapLen*8 < size/512 {
		return false
	}
	if version == 3 {
		bitmapLen = ((size+511)/512 + 7) / 8
	}
	for i := range dirty {
		if i/8 >= bitmapLen {
			return false
		}
	}
	return true
}

func TestMergeInPlaceAsUMLMoo(t *testing.T) {
	forEachMergeCase(t, func(t *testing.T, dir string, version uint32, size int64, kind backingKind, dirty map[int64][]byte) {
		// Two identical backing files: uml_moo -b merges into one,
		// MergeInPlace with Backing into the other.
		want, got := filepath.Join(dir, "moo.img"), filepath.Join(dir, "merged.img")
		makeBacking(t, want, size, kind)
		makeBacking(t, got, size, kind)
		cowPath := filepath.Join(dir, "root.cow")
		makeCOW(t, cowPath, "/nonexistent/root.img", version, size, dirty)
		moo(t, "-d", "-b", want, cowPath)
		if err := MergeInPlace(context.Background(), cowPath, MergeOptions{Backing: got}); err != nil {
			t.Fatalf("MergeInPlace: %v", err)
		}
		sameAsMoo(t, want, got)
		// Both leave the backing file alone, mtime included, when nothing
		// changes.
		if wm, gm := mtime(t, want) == fixtureMTime, mtime(t, got) == fixtureMTime; wm != gm {
			t.Errorf("mtime unchanged: uml_moo %v, MergeInPlace %v", wm, gm)
		}
	})
}

// TestMergeShortBitmap checks the sectors a v1 or v2 bitmap misses: they
// are the backing file's.
func TestMergeShortBitmap(t *testing.T) {
	for _, version := range []uint32{1, 2} {
		t.Run(fmt.Sprint(version), func(t *testing.T) {
			dir := testbed.PhysicalTempDir(t)
			backing := filepath.Join(dir, "root.img")
			const size = 10 * 512
			makeBacking(t, backing, size, backingKinds[1])
			cowPath := filepath.Join(dir, "root.cow")
			h := makeCOW(t, cowPath, backing, version, size, map[int64][]byte{7: sectorData(7, 'c')})
			if h.BitmapLen != 1 {
				t.Fatalf("bitmap of %d bytes; the test wants one that misses the last 2 sectors", h.BitmapLen)
			}
			// Data where the sectors' bits would be and in their place in
			// the COW file: neither counts.
			f, err := os.OpenFile(cowPath, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			_, err = f.WriteAt([]byte{0xff}, h.BitmapOffset+1)
			if err == nil {
				_, err = f.WriteAt(bytes.Repeat(sectorData(8, 'c'), 2), h.DataOffset+8*512)
			}
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				t.Fatal(err)
			}
			got := filepath.Join(dir, "merged.img")
			if err := Merge(context.Background(), cowPath, got, MergeOptions{}); err != nil {
				t.Fatal(err)
			}
			want := readFile(t, backing)
			copy(want[7*512:], sectorData(7, 'c'))
			if !bytes.Equal(readFile(t, got), want) {
				t.Errorf("merged image is not the backing file with sector 7 from the COW file")
			}
		})
	}
}

func mtime(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.ModTime().Unix()
}

// noTemporaryFiles fails the test if Merge left a temporary file in dir.
func noTemporaryFiles(t *testing.T, dir string) {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range des {
		if strings.Contains(de.Name(), ".merge-") {
			t.Errorf("temporary file %s left behind", de.Name())
		}
	}
}

// failingWriter fails every write after the first n.
type failingWriter struct {
	w io.WriterAt
	n int
}

var errInjected = errors.New("injected write failure (disk full)")

func (f *failingWriter) WriteAt(p []byte, off int64) (int, error) {
	if f.n == 0 {
		return 0, errInjected
	}
	f.n--
	return f.w.WriteAt(p, off)
}

// TestMergeFailureLeavesNothing checks that a merge that fails midway, as
// on a full disk, leaves neither the new image nor a temporary file.
func TestMergeFailureLeavesNothing(t *testing.T) {
	dir := testbed.PhysicalTempDir(t)
	backing := filepath.Join(dir, "root.img")
	size := int64(3 << 20)
	makeBacking(t, backing, size, backingKinds[1])
	cowPath := filepath.Join(dir, "root.cow")
	makeCOW(t, cowPath, backing, 3, size, map[int64][]byte{4000: sectorData(4000, 'c')})
	for _, n := range []int{0, 1, 5, 100} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			newPath := filepath.Join(dir, "new.img")
			var fw *failingWriter
			err := merge(context.Background(), cowPath, newPath, MergeOptions{}, func(w io.WriterAt) io.WriterAt {
				fw = &failingWriter{w: w, n: n}
				return fw
			})
			if !errors.Is(err, errInjected) {
				t.Fatalf("merge with writes failing after %d: %v, want the injected error", n, err)
			}
			if fw.n != 0 {
				t.Fatalf("only %d of %d writes made before the failure: the test does not fail midway", n-fw.n, n)
			}
			if _, err := os.Lstat(newPath); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("after a failed merge, %s: %v; want it absent", newPath, err)
			}
			noTemporaryFiles(t, dir)
		})
	}
	// The same merge without the failure writes more than 100 times: the
	// failures above were midway.
	count := &failingWriter{n: 1 << 30}
	if err := merge(context.Background(), cowPath, filepath.Join(dir, "ok.img"), MergeOptions{}, func(w io.WriterAt) io.WriterAt {
		count.w = w
		return count
	}); err != nil {
		t.Fatal(err)
	}
	if writes := 1<<30 - count.n; writes <= 100 {
		t.Errorf("the whole merge makes %d writes; the failure test needs more than 100", writes)
	}
}

func TestMergeCanceled(t *testing.T) {
	dir := testbed.PhysicalTempDir(t)
	backing := filepath.Join(dir, "root.img")
	makeBacking(t, backing, 3<<20, backingKinds[1])
	cowPath := filepath.Join(dir, "root.cow")
	makeCOW(t, cowPath, backing, 3, 3<<20, nil)
	ctx, cancel := context.WithCancel(context.Background())
	newPath := filepath.Join(dir, "new.img")
	// Cancel at the first write: the merge stops at the next chunk.
	err := merge(ctx, cowPath, newPath, MergeOptions{}, func(w io.WriterAt) io.WriterAt {
		return writerFunc(func(p []byte, off int64) (int, error) {
			cancel()
			return w.WriteAt(p, off)
		})
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("merge canceled: %v, want context.Canceled", err)
	}
	if _, err := os.Lstat(newPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after a canceled merge, %s: %v; want it absent", newPath, err)
	}
	noTemporaryFiles(t, dir)
}

type writerFunc func(p []byte, off int64) (int, error)

func (f writerFunc) WriteAt(p []byte, off int64) (int, error) { return f(p, off) }

func TestMergeRefuses(t *testing.T) {
	dir := testbed.PhysicalTempDir(t)
	backing := filepath.Join(dir, "root.img")
	makeBacking(t, backing, 64<<10, backingKinds[1])
	cowPath := filepath.Join(dir, "root.cow")
	makeCOW(t, cowPath, backing, 3, 64<<10, map[int64][]byte{3: sectorData(3, 'c')})
	existing := filepath.Join(dir, "existing.img")
	if err := os.WriteFile(existing, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	touched := filepath.Join(dir, "touched.img")
	makeBacking(t, touched, 64<<10, backingKinds[1])
	if err := os.Chtimes(touched, time.Now(), time.Unix(fixtureMTime+1, 0)); err != nil {
		t.Fatal(err)
	}
	short := filepath.Join(dir, "short.img")
	makeBacking(t, short, 32<<10, backingKinds[1])

	tests := []struct {
		name    string
		newPath string
		opt     MergeOptions
		want    string
	}{
		{"new image exists", existing, MergeOptions{}, "existing.img already exists; remove it or choose another name"},
		{"backing file touched", filepath.Join(dir, "a.img"), MergeOptions{Backing: touched}, "changed since the COW file was made: it was modified at"},
		{"backing file of another size", filepath.Join(dir, "b.img"), MergeOptions{Backing: short}, "its size is 32768 bytes, the COW header says 65536"},
		{"no backing file", filepath.Join(dir, "c.img"), MergeOptions{Backing: filepath.Join(dir, "none.img")}, "opening the backing file: stat " + dir + "/none.img: no such file or directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Merge(context.Background(), cowPath, tt.newPath, tt.opt)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Merge: %v, want an error with %q", err, tt.want)
			}
			if tt.newPath != existing {
				if _, err := os.Lstat(tt.newPath); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s: %v; want it absent", tt.newPath, err)
				}
			}
			noTemporaryFiles(t, dir)
		})
	}
	if got := string(readFile(t, existing)); got != "old" {
		t.Errorf("existing file now holds %q", got)
	}
	// In place too, a changed backing file is refused and left alone.
	before := readFile(t, touched)
	err := MergeInPlace(context.Background(), cowPath, MergeOptions{Backing: touched})
	if err == nil || !strings.Contains(err.Error(), "changed since the COW file was made") {
		t.Errorf("MergeInPlace on a touched backing file: %v, want a refusal", err)
	}
	if !bytes.Equal(before, readFile(t, touched)) || mtime(t, touched) != fixtureMTime+1 {
		t.Errorf("MergeInPlace changed a backing file it refused")
	}
}

// TestMergeLocksWhileMerging checks the merge's own lock: another
// descriptor closed in this process keeps it.
func TestMergeLocksWhileMerging(t *testing.T) {
	dir := testbed.PhysicalTempDir(t)
	backing := filepath.Join(dir, "root.img")
	makeBacking(t, backing, 64<<10, backingKinds[1])
	cowPath := filepath.Join(dir, "root.cow")
	makeCOW(t, cowPath, backing, 3, 64<<10, map[int64][]byte{3: sectorData(3, 'c')})
	var sawCOW, sawBacking int
	err := merge(context.Background(), cowPath, filepath.Join(dir, "new.img"), MergeOptions{}, func(w io.WriterAt) io.WriterAt {
		return writerFunc(func(p []byte, off int64) (int, error) {
			// What a guest starting now would find (its kernel write-locks
			// the COW file), after a descriptor of it is closed here.
			if _, err := Read(cowPath); err != nil {
				return 0, err
			}
			sawCOW, _ = LockHolder(cowPath, true)
			sawBacking, _ = LockHolder(backing, true)
			return w.WriteAt(p, off)
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if sawCOW != -1 || sawBacking != -1 {
		t.Errorf("lock holders seen during the merge: COW file %d, backing file %d; want -1 (open file description locks) for both", sawCOW, sawBacking)
	}
	if h, err := LockHolder(cowPath, true); err != nil || h != 0 {
		t.Errorf("after the merge, the COW file is locked by %d (%v)", h, err)
	}
}
