package cow

import (
	"errors"
	"fmt"
	"io/fs"
	"math/bits"
	"os"
	"syscall"
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
	f, err := os.Open(path)
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
	bitmap := make([]byte, h.BitmapLen)
	if _, err := f.ReadAt(bitmap, h.BitmapOffset); err != nil {
		return Info{}, fmt.Errorf("reading COW file %s: reading the bitmap: %w", path, truncated(err))
	}
	in.DirtySectors, in.DirtyBytes = dirtyCount(bitmap, h.Size, int64(h.SectorSize))

	bfi, err := os.Stat(h.Backing)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		in.BackingProblem = fmt.Errorf("backing file %s does not exist; the kernel cannot use the COW file without it: put the backing file back at that path", h.Backing)
	case err != nil:
		in.BackingProblem = fmt.Errorf("checking backing file: %w", err)
	case !bfi.Mode().IsRegular():
		in.BackingFound = true
		in.BackingProblem = fmt.Errorf("backing file %s is not a regular file", h.Backing)
	default:
		in.BackingFound = true
		in.BackingSize, in.BackingMTime = bfi.Size(), bfi.ModTime().Unix()
		in.BackingProblem = h.Matches(bfi)
	}
	return in, nil
}

// dirtyCount counts the bits of bitmap for the sectors of an image of size
// bytes, and the image bytes those sectors cover.
func dirtyCount(bitmap []byte, size, ss int64) (sectors, bytes int64) {
	n := min(ceilDiv64(size, ss), int64(len(bitmap))*8)
	full := n / 8
	for _, b := range bitmap[:full] {
		sectors += int64(bits.OnesCount8(b))
	}
	if rest := n % 8; rest != 0 {
		sectors += int64(bits.OnesCount8(bitmap[full] & (1<<rest - 1)))
	}
	bytes = sectors * ss
	if last := n - 1; size%ss != 0 && last == size/ss && bitmap[last/8]&(1<<(last%8)) != 0 {
		bytes -= ss - size%ss // the partial last sector
	}
	return sectors, bytes
}

func ceilDiv64(x, d int64) int64 { return int64(ceilDiv(uint64(x), uint64(d))) }
