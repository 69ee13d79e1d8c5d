package cow

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/bits"
	"os"
	"syscall"

	"umlsd/internal/printable"
)

// Info is what a COW file holds, for `umlctl cow info`.
type Info struct {
	Header
	// Sectors is the number of sectors of the image, the last one
	// possibly partial.
	Sectors int64
	// DirtySectors is the number of sectors the COW file holds (bits set
	// in its bitmap; bits past the last sector do not count), and
	// DirtyBytes the image bytes they cover.
	DirtySectors, DirtyBytes int64
	// FileSize and Allocated are the COW file's length and the bytes it
	// takes on disk.
	FileSize, Allocated int64

	// BackingFound says whether the backing file exists; BackingSize and
	// BackingMTime are then its size and mtime (seconds).
	BackingFound              bool
	BackingSize, BackingMTime int64
	// BackingProblem says why the kernel would refuse the backing file:
	// it is missing, or its size or mtime changed; nil if it would not.
	BackingProblem error
}

// ReadInfo reads the COW file at path and checks it against its backing
// file, the one its header names.
func ReadInfo(path string) (Info, error) {
	f, err := openRegular(path, "COW file", os.O_RDONLY)
	if err != nil {
		return Info{}, fmt.Errorf("reading COW file %s: %w", path, err)
	}
	defer f.Close()
	h, err := ReadHeader(f)
	if err != nil {
		return Info{}, fmt.Errorf("reading COW file %s: %w", path, err)
	}
	in := Info{Header: h, Sectors: ceilDiv64(h.Size, int64(h.SectorSize))}
	fi, err := f.Stat()
	if err != nil {
		return Info{}, fmt.Errorf("reading COW file %s: %w", path, err)
	}
	in.FileSize = fi.Size()
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		in.Allocated = st.Blocks * 512
	}
	if in.DirtySectors, in.DirtyBytes, err = countDirty(f, h); err != nil {
		return Info{}, fmt.Errorf("reading COW file %s: reading the bitmap: %w", path, err)
	}

	backing := printable.Line(h.Backing)
	bfi, err := os.Stat(h.Backing)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		in.BackingProblem = fmt.Errorf("backing file %s does not exist; the kernel cannot use the COW file without it: put the backing file back at that path", backing)
	case err != nil:
		in.BackingProblem = fmt.Errorf("checking backing file: %w", printablePath(err))
	case !bfi.Mode().IsRegular():
		in.BackingFound = true
		in.BackingProblem = fmt.Errorf("backing file %s is %s, not a regular file; the kernel cannot use it as a disk image: put the backing file back at that path", backing, typeName(bfi.Mode()))
	default:
		in.BackingFound = true
		in.BackingSize, in.BackingMTime = bfi.Size(), bfi.ModTime().Unix()
		in.BackingProblem = h.Matches(bfi)
	}
	return in, nil
}

// countDirty counts the bits of h's bitmap in f for the sectors of the
// image, and the image bytes those sectors cover. The header says how long
// the bitmap is, up to 2 GiB: it is read a chunk at a time, and its holes
// are skipped.
func countDirty(f *os.File, h Header) (sectors, bytes int64, err error) {
	// First: the file must hold the whole bitmap, holes included.
	if fi, err := f.Stat(); err != nil {
		return 0, 0, err
	} else if fi.Size() < h.BitmapOffset+h.BitmapLen {
		return 0, 0, truncated(io.EOF)
	}
	size, ss := h.Size, int64(h.SectorSize)
	n := min(ceilDiv64(size, ss), h.BitmapLen*8) // the sectors with a bit
	ext := extents{f: f, role: "COW file"}
	buf := make([]byte, chunkSize)
	for first := int64(0); first < n; first += chunkSize * 8 {
		last := min(first+chunkSize*8, n)
		off, end := h.BitmapOffset+first/8, h.BitmapOffset+ceilDiv64(last, 8)
		hasData, err := ext.overlaps(off, end)
		if err != nil {
			return 0, 0, err
		}
		if !hasData {
			continue
		}
		b := buf[:end-off]
		if err := ext.read(b, off); err != nil {
			return 0, 0, err
		}
		sectors += dirtyCount(b, last-first)
		if last == n && size%ss != 0 && n == ceilDiv64(size, ss) && b[(n-1-first)/8]&(1<<((n-1)%8)) != 0 {
			bytes -= ss - size%ss // the partial last sector
		}
	}
	return sectors, bytes + sectors*ss, nil
}

// dirtyCount counts the first n bits of bitmap.
func dirtyCount(bitmap []byte, n int64) (sectors int64) {
	full := n / 8
	for _, b := range bitmap[:full] {
		sectors += int64(bits.OnesCount8(b))
	}
	if rest := n % 8; rest != 0 {
		sectors += int64(bits.OnesCount8(bitmap[full] & (1<<rest - 1)))
	}
	return sectors
}

func ceilDiv64(x, d int64) int64 { return int64(ceilDiv(uint64(x), uint64(d))) }
