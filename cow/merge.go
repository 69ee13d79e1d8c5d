package cow

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"umlsd/internal/printable"
)

// MergeOptions are the options of Merge and MergeInPlace.
type MergeOptions struct {
	// Backing, if set, is the backing file to use instead of the one the
	// header names, as uml_moo -b: for a COW file made in a jail, whose
	// header has the path inside the jail.
	Backing string
	// BackingWritable, for MergeInPlace without Backing, says whether the
	// backing file the header names may be written into: it gets that
	// file's information from the open file, before anything is locked or
	// written. A guest can forge its COW file's header to name any file,
	// the C library for one, so without BackingWritable, or when it
	// returns an error, MergeInPlace refuses.
	BackingWritable func(fs.FileInfo) error
}

// chunkSize is how much of the image Merge handles at a time: large reads
// and writes, a buffer that stays in the cache. It is also how much of a
// bitmap is read at a time.
const chunkSize = 1 << 20

// Merge does what `uml_moo COW NEW` does: it writes the image the guest
// sees, the backing file with the COW file's sectors over it, to the new
// file newPath. The result is byte for byte uml_moo's and at most as
// allocated: like uml_moo it leaves a hole for every all-zero sector, and
// like uml_moo it covers only the whole sectors of the backing file, which
// drops the tail of a backing file whose size is not a multiple of the
// sector size.
//
// Unlike uml_moo it refuses to overwrite newPath, it never leaves a partial
// image there (it writes a temporary file in the same directory, syncs it
// and renames it), and it refuses while a guest holds the COW file or the
// backing file for writing, which it read-locks while it works.
func Merge(ctx context.Context, cowPath, newPath string, opt MergeOptions) error {
	return merge(ctx, cowPath, newPath, opt, nil)
}

// merge is Merge with a hook that wraps the output file, for tests that
// make writes fail.
func merge(ctx context.Context, cowPath, newPath string, opt MergeOptions, wrap func(io.WriterAt) io.WriterAt) error {
	if _, err := os.Lstat(newPath); err == nil {
		return fmt.Errorf("merging COW file %s: %s already exists; remove it or choose another name for the merged image", cowPath, newPath)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("merging COW file %s: %w", cowPath, err)
	}
	m, err := openMerge(cowPath, opt, false)
	if err != nil {
		return fmt.Errorf("merging COW file %s: %w", cowPath, err)
	}
	defer m.close()

	tmp, err := createTemp(newPath)
	if err != nil {
		return fmt.Errorf("merging COW file %s: %w", cowPath, err)
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	var out io.WriterAt = tmp
	if wrap != nil {
		out = wrap(tmp)
	}
	// The length first: all-zero sectors, even the last, stay holes.
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("merging COW file %s: writing %s: %w", cowPath, tmp.Name(), err)
	}
	if err := tmp.Truncate(m.sectors * m.ss); err != nil {
		return fmt.Errorf("merging COW file %s: writing %s: %w", cowPath, tmp.Name(), err)
	}
	if err := m.copyAll(ctx, out); err != nil {
		return fmt.Errorf("merging COW file %s: %w", cowPath, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("merging COW file %s: writing %s: %w", cowPath, tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("merging COW file %s: writing %s: %w", cowPath, tmp.Name(), err)
	}
	if err := renameNoReplace(tmp.Name(), newPath); err != nil {
		os.Remove(tmp.Name())
		done = true
		return fmt.Errorf("merging COW file %s: %w", cowPath, err)
	}
	done = true
	return syncDir(filepath.Dir(newPath))
}

// MergeInPlace does what `uml_moo -d COW` does: it writes the COW file's
// sectors into the backing file, which then has its mtime changed: every
// COW file on it, this one included, is then invalid. Like uml_moo, it
// writes only the sectors whose contents change, and leaves an all-zero
// sector alone where the backing file has zeros already.
//
// It refuses, as uml_moo does, when the backing file's size or mtime differ
// from the header's: the COW file was not made on it as it is. Unlike
// uml_moo it also refuses while any guest uses the backing file (through
// any COW file) or the COW file, and write-locks both while it works. A
// merge in place cannot be undone, and one interrupted leaves the backing
// file partly merged and its mtime changed.
func MergeInPlace(ctx context.Context, cowPath string, opt MergeOptions) error {
	m, err := openMerge(cowPath, opt, true)
	if err != nil {
		return fmt.Errorf("merging COW file %s in place: %w", cowPath, err)
	}
	defer m.close()
	if err := m.mergeInPlace(ctx); err != nil {
		return fmt.Errorf("merging COW file %s in place: %w", cowPath, err)
	}
	if err := m.back.Sync(); err != nil {
		return fmt.Errorf("merging COW file %s in place: writing %s: %w", cowPath, printable.Line(m.back.Name()), err)
	}
	return nil
}

// merger is a COW file and its backing file, open, locked and checked.
type merger struct {
	h         Header
	cow, back *os.File
	bits      bitmap
	ss        int64
	// sectors is how many sectors uml_moo merges: the backing file's
	// whole sectors.
	sectors int64
	zero    []byte // a sector of zeros
}

func openMerge(cowPath string, opt MergeOptions, inPlace bool) (_ *merger, err error) {
	m := &merger{}
	defer func() {
		if err != nil {
			m.close()
		}
	}()
	if m.cow, err = openRegular(cowPath, "COW file", os.O_RDONLY); err != nil {
		return nil, err
	}
	// A guest write-locks its COW file: a read lock is enough to keep one
	// from starting on it while we read it.
	if err := lockFile(m.cow, "COW file", false); err != nil {
		return nil, err
	}
	if m.h, err = ReadHeader(m.cow); err != nil {
		return nil, err
	}
	backing := m.h.Backing
	if opt.Backing != "" {
		backing = opt.Backing
	}
	flag := os.O_RDONLY
	if inPlace {
		flag = os.O_RDWR
	}
	if m.back, err = openRegular(backing, "backing file", flag); err != nil {
		return nil, fmt.Errorf("opening the backing file: %w", err)
	}
	fi, err := m.back.Stat()
	if err != nil {
		return nil, fmt.Errorf("opening the backing file: %w", printablePath(err))
	}
	if inPlace && opt.Backing == "" {
		if opt.BackingWritable == nil {
			return nil, fmt.Errorf("COW file %s names backing file %s, and a COW file can be forged by its guest, so the merge does not write into a file it names; give the backing file explicitly if you mean it", cowPath, printable.Line(backing))
		}
		if err := opt.BackingWritable(fi); err != nil {
			return nil, err
		}
	}
	// In place, a guest on any COW file of the backing file (which it
	// read-locks) must not run: write-lock it. Otherwise only a writer of
	// the backing file itself is in the way.
	if err := lockFile(m.back, "backing file", inPlace); err != nil {
		return nil, err
	}
	// The backing file's real size first: the header's decides how long
	// the bitmap is.
	h := m.h
	h.Backing = backing
	if err := h.Matches(fi); err != nil {
		return nil, err
	}
	cfi, err := m.cow.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading the bitmap: %w", printablePath(err))
	}
	if cfi.Size() < m.h.BitmapOffset+m.h.BitmapLen {
		return nil, fmt.Errorf("reading the bitmap: %w", truncated(io.EOF))
	}
	m.bits = bitmap{f: m.cow, off: m.h.BitmapOffset, len: m.h.BitmapLen}
	m.ss = int64(m.h.SectorSize)
	m.sectors = m.h.Size / m.ss
	m.zero = make([]byte, m.ss)
	return m, nil
}

func (m *merger) close() {
	if m.cow != nil {
		m.cow.Close()
	}
	if m.back != nil {
		m.back.Close()
	}
}

// bitmap is a window on a COW file's bitmap: a header can claim one of up
// to 2 GiB, so it is read a chunk at a time as the merge proceeds.
type bitmap struct {
	f        *os.File
	off, len int64 // where the bitmap is in f, and its length
	base     int64 // the bitmap byte buf[0] is
	buf      []byte
}

// load makes the window hold the bits of sectors [from, to), at most
// chunkSize*8 of them.
func (b *bitmap) load(from, to int64) error {
	lo, hi := from/8, min(ceilDiv64(to, 8), b.len)
	if lo >= hi || (lo >= b.base && hi <= b.base+int64(len(b.buf))) {
		return nil
	}
	if b.buf == nil {
		b.buf = make([]byte, min(chunkSize, b.len))
	}
	b.buf = b.buf[:min(int64(cap(b.buf)), b.len-lo)]
	b.base = lo
	if _, err := b.f.ReadAt(b.buf, b.off+lo); err != nil {
		b.buf = b.buf[:0]
		return fmt.Errorf("reading the bitmap: %w", truncated(err))
	}
	return nil
}

// byteAt is the bitmap's byte j, which must be in the window or past the
// bitmap's end. The bitmap of a v1 or v2 header is a byte short when the
// sector count is not a multiple of 8; the sectors it misses are clean, as
// for uml_moo when its heap is zero there.
func (b *bitmap) byteAt(j int64) byte {
	if j >= b.len {
		return 0
	}
	return b.buf[j-b.base]
}

// dirty says whether sector i is in the COW file.
func (m *merger) dirty(i int64) bool {
	return m.bits.byteAt(i/8)&(1<<(i%8)) != 0
}

// anyDirty says whether a sector in [from, to) is in the COW file.
func (m *merger) anyDirty(from, to int64) bool {
	for i := from; i < to; {
		if i%8 == 0 && to-i >= 8 {
			if m.bits.byteAt(i/8) != 0 {
				return true
			}
			i += 8
			continue
		}
		if m.dirty(i) {
			return true
		}
		i++
	}
	return false
}

// copyAll writes the merged image's non-zero sectors to out, a chunk at a
// time: the backing file's data extents, read in large pieces (its holes
// are zeros), with the COW file's sectors over them.
func (m *merger) copyAll(ctx context.Context, out io.WriterAt) error {
	buf := make([]byte, chunkSize)
	perChunk := int64(chunkSize) / m.ss
	ext := extents{f: m.back, role: "backing file"}
	for first := int64(0); first < m.sectors; first += perChunk {
		if err := ctx.Err(); err != nil {
			return err
		}
		last := min(first+perChunk, m.sectors)
		off, end := first*m.ss, last*m.ss
		hasData, err := ext.overlaps(off, end)
		if err != nil {
			return err
		}
		if err := m.bits.load(first, last); err != nil {
			return err
		}
		if !hasData && !m.anyDirty(first, last) {
			continue
		}
		b := buf[:end-off]
		if err := ext.read(b, off); err != nil {
			return err
		}
		if err := m.overlay(b, first, last); err != nil {
			return err
		}
		if err := m.writeNonZero(out, b, first); err != nil {
			return err
		}
	}
	return nil
}

// overlay reads the COW file's sectors of [first, last) into b, which
// holds the image from sector first on.
func (m *merger) overlay(b []byte, first, last int64) error {
	for i := first; i < last; {
		if !m.dirty(i) {
			i++
			continue
		}
		j := i + 1
		for j < last && m.dirty(j) {
			j++
		}
		p := b[(i-first)*m.ss : (j-first)*m.ss]
		if _, err := m.cow.ReadAt(p, m.h.DataOffset+i*m.ss); err != nil {
			return fmt.Errorf("reading the COW file's sectors: %w", truncated(err))
		}
		i = j
	}
	return nil
}

// writeNonZero writes b, the image from sector first on, to out but for
// its all-zero sectors, in runs of consecutive sectors.
func (m *merger) writeNonZero(out io.WriterAt, b []byte, first int64) error {
	n := int64(len(b)) / m.ss
	for i := int64(0); i < n; {
		if m.isZero(b, i) {
			i++
			continue
		}
		j := i + 1
		for j < n && !m.isZero(b, j) {
			j++
		}
		if _, err := out.WriteAt(b[i*m.ss:j*m.ss], (first+i)*m.ss); err != nil {
			return fmt.Errorf("writing the merged image: %w", err)
		}
		i = j
	}
	return nil
}

func (m *merger) isZero(b []byte, i int64) bool {
	return bytes.Equal(b[i*m.ss:(i+1)*m.ss], m.zero)
}

// mergeInPlace writes the COW file's sectors to the backing file as uml_moo
// -d does: each, unless it is all zeros (and not the last sector) and the
// backing file has zeros there already.
func (m *merger) mergeInPlace(ctx context.Context) error {
	perChunk := int64(chunkSize) / m.ss
	cowBuf, backBuf := make([]byte, chunkSize), make([]byte, chunkSize)
	for first := int64(0); first < m.sectors; first += perChunk {
		if err := ctx.Err(); err != nil {
			return err
		}
		last := min(first+perChunk, m.sectors)
		if err := m.bits.load(first, last); err != nil {
			return err
		}
		for i := first; i < last; {
			if !m.dirty(i) {
				// Skip clean bytes of the bitmap whole.
				if i%8 == 0 && m.bits.byteAt(i/8) == 0 {
					i += 8
				} else {
					i++
				}
				continue
			}
			j := i + 1
			for j < last && m.dirty(j) {
				j++
			}
			if err := m.mergeRun(cowBuf[:(j-i)*m.ss], backBuf[:(j-i)*m.ss], i); err != nil {
				return err
			}
			i = j
		}
	}
	return nil
}

// mergeRun merges the dirty sectors from first on, len(cowBuf) bytes.
func (m *merger) mergeRun(cowBuf, backBuf []byte, first int64) error {
	if _, err := m.cow.ReadAt(cowBuf, m.h.DataOffset+first*m.ss); err != nil {
		return fmt.Errorf("reading the COW file's sectors: %w", truncated(err))
	}
	n := int64(len(cowBuf)) / m.ss
	// skip[k]: sector first+k is all zeros, not the last, and so is the
	// backing file's.
	skip := make([]bool, n)
	backRead := false
	for k := range n {
		if !m.isZero(cowBuf, k) || first+k == m.sectors-1 {
			continue
		}
		if !backRead {
			if _, err := m.back.ReadAt(backBuf, first*m.ss); err != nil {
				return fmt.Errorf("reading the backing file: %w", truncated(err))
			}
			backRead = true
		}
		skip[k] = m.isZero(backBuf, k)
	}
	for k := int64(0); k < n; {
		if skip[k] {
			k++
			continue
		}
		l := k + 1
		for l < n && !skip[l] {
			l++
		}
		if _, err := m.back.WriteAt(cowBuf[k*m.ss:l*m.ss], (first+k)*m.ss); err != nil {
			return fmt.Errorf("writing the backing file: %w", err)
		}
		k = l
	}
	return nil
}

// extents reads a file's data extents, found with SEEK_DATA and SEEK_HOLE,
// with zeros for its holes. Calls go forward through the file.
type extents struct {
	f    *os.File
	role string // "backing file" or "COW file", for errors
	// [start, end) is the data extent that holds the last offset asked
	// for, or the first after it, if known; eof: there is none.
	start, end int64
	known, eof bool
}

// next makes [e.start, e.end) the data extent that holds off or the first
// one after it.
func (e *extents) next(off int64) error {
	if e.eof || (e.known && off < e.end) {
		return nil
	}
	start, err := unix.Seek(int(e.f.Fd()), off, unix.SEEK_DATA)
	if errors.Is(err, unix.ENXIO) {
		e.eof = true
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the %s: %w", e.role, err)
	}
	end, err := unix.Seek(int(e.f.Fd()), start, unix.SEEK_HOLE)
	if err != nil {
		return fmt.Errorf("reading the %s: %w", e.role, err)
	}
	e.start, e.end, e.known = start, end, true
	return nil
}

// overlaps says whether data extents overlap [off, end).
func (e *extents) overlaps(off, end int64) (bool, error) {
	if err := e.next(off); err != nil {
		return false, err
	}
	return !e.eof && e.start < end, nil
}

// read fills b with the file from off on.
func (e *extents) read(b []byte, off int64) error {
	end := off + int64(len(b))
	for pos := off; pos < end; {
		if err := e.next(pos); err != nil {
			return err
		}
		if e.eof || e.start >= end {
			clear(b[pos-off:])
			return nil
		}
		if e.start > pos {
			clear(b[pos-off : e.start-off])
			pos = e.start
		}
		to := min(e.end, end)
		if _, err := e.f.ReadAt(b[pos-off:to-off], pos); err != nil {
			return fmt.Errorf("reading the %s: %w", e.role, truncated(err))
		}
		pos = to
	}
	return nil
}

// truncated turns the EOF of a short read into an error that says so.
func truncated(err error) error {
	if errors.Is(err, io.EOF) {
		return errors.New("the file is shorter than its header says: it is truncated or corrupt")
	}
	return err
}

// createTemp creates an empty file for path in its directory, with a
// unique hidden name. Unlike uml_moo's (mode 0644 less the umask), it is
// readable by its owner only, as the COW file is: the image holds the
// guest's private data, its host keys and password hashes.
func createTemp(path string) (*os.File, error) {
	dir, base := filepath.Split(path)
	for range 100 {
		var r [6]byte
		if _, err := rand.Read(r[:]); err != nil {
			return nil, err
		}
		name := filepath.Join(dir, "."+base+".merge-"+hex.EncodeToString(r[:]))
		f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if !errors.Is(err, fs.ErrExist) {
			return f, err
		}
	}
	return nil, fmt.Errorf("creating a temporary file next to %s: too many exist", path)
}

// renameNoReplace renames from to to unless to exists.
func renameNoReplace(from, to string) error {
	err := unix.Renameat2(unix.AT_FDCWD, from, unix.AT_FDCWD, to, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		// A file system without RENAME_NOREPLACE: a link fails the same way.
		if err = os.Link(from, to); err == nil {
			return os.Remove(from)
		}
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s appeared while merging; remove it or choose another name for the merged image", to)
		}
		return err
	}
	if errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("%s appeared while merging; remove it or choose another name for the merged image", to)
	}
	if err != nil {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
	}
	return nil
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	return nil
}
