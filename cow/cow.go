// Package cow reads and creates the copy-on-write files of UML's ubd block
// driver, as the kernel (arch/um/drivers/cow_user.c) and uml_mkcow do.
//
// A COW file is a header naming the backing file, with the backing file's
// size and mtime when the COW was made; then a bitmap with one bit per
// sector (set: the sector is in the COW file); then the sectors' data at
// their place, so that the file is sparse. The kernel refuses a COW file
// whose backing file's size or mtime differs from the header's.
//
// Three header versions exist. The kernel reads all three; it and uml_mkcow
// write version 3, the only one Create writes:
//
//	v1: packed, native endian: magic, version, path[256], u32 mtime,
//	    u64 size, s32 sectorsize (280 bytes)
//	v2: packed, big-endian: magic, version, path[4096], u32 mtime,
//	    u64 size, s32 sectorsize (4120 bytes)
//	v3: packed, big-endian: magic, version, u32 mtime, u64 size,
//	    u32 sectorsize, u32 alignment, u32 cow_format, path[4096] (4128 bytes)
//
// The path is NUL-terminated; bytes after the NUL are not part of it.
package cow

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"time"

	"umlsd/internal/printable"
)

// Header is a COW file's header, with the layout the kernel derives from it.
type Header struct {
	Version      int    // 1, 2 or 3
	Backing      string // backing file path as stored
	MTime        int64  // backing file mtime, seconds (as stored)
	Size         int64  // backing file size in bytes
	SectorSize   int
	Alignment    int   // v3 only; 0 otherwise
	BitmapOffset int64 // where the bitmap starts
	BitmapLen    int64
	DataOffset   int64 // where sector 0's data starts
}

// ErrNotCOW is the error of ReadHeader for a file without the COW magic
// number: the kernel uses such a file as a plain disk image.
var ErrNotCOW = errors.New("not a COW file: it does not start with the COW magic number")

const (
	magic = 0x4f4f4f4d // "MOOO"

	pathLenV1 = 256
	pathLenV3 = 4096 // also v2's

	headerLenV1 = 4 + 4 + pathLenV1 + 4 + 8 + 4
	headerLenV2 = 4 + 4 + pathLenV3 + 4 + 8 + 4
	headerLenV3 = 4 + 4 + 4 + 8 + 4 + 4 + 4 + pathLenV3
	// Writers before 2006 left v3 unpacked: on 64-bit hosts mtime took 8
	// bytes, aligned, and the struct was padded to 8 bytes. The kernel still
	// reads such files, recognising them by a zero where a packed header has
	// the path's first 4 bytes (their cow_format, always 0).
	headerLenV3Unpacked = (4 + 4 + 8 + 8 + 4 + 4 + 4 + pathLenV3 + 7) &^ 7

	// Sanity limits for hostile or corrupt headers. uml_mkcow and the kernel
	// write sector size 512 and the page size as alignment.
	minSectorSize = 512
	maxSectorSize = 64 << 10
	minAlignment  = 512
	maxAlignment  = 1 << 20
	// The kernel keeps the data offset in an int (struct cow in ubd_kern.c),
	// which limits v3 backing files to about 8 TiB.
	maxDataOffset = math.MaxInt32
)

// ReadHeader reads a COW header at the start of r and computes the bitmap
// and data offsets as the kernel does for its version. A file without the
// COW magic number gives ErrNotCOW.
func ReadHeader(r io.ReaderAt) (Header, error) {
	var b [headerLenV3Unpacked]byte // the kernel reads the union of all layouts
	n, err := r.ReadAt(b[:], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return Header{}, fmt.Errorf("reading header: %w", err)
	}
	if n < 4 {
		return Header{}, ErrNotCOW
	}

	// Like the kernel, accept the magic number in either byte order and read
	// the version in the same one; the other fields are in each version's
	// own byte order regardless.
	var version uint32
	switch {
	case binary.NativeEndian.Uint32(b[0:4]) == magic:
		version = binary.NativeEndian.Uint32(b[4:8])
	case binary.BigEndian.Uint32(b[0:4]) == magic:
		version = binary.BigEndian.Uint32(b[4:8])
	default:
		return Header{}, ErrNotCOW
	}
	if n < 8 {
		return Header{}, fmt.Errorf("truncated COW header: the file has %d bytes, too few for the version", n)
	}

	var (
		h         = Header{Version: int(version)}
		need      int
		size      uint64
		ss        int32
		align     uint32
		mtime     uint32
		path      []byte
		bitmapOff uint64
	)
	switch version {
	case 1:
		need = headerLenV1
		ne := binary.NativeEndian
		mtime = ne.Uint32(b[264:268])
		size = ne.Uint64(b[268:276])
		ss = int32(ne.Uint32(b[276:280]))
		path = b[8 : 8+pathLenV1]
		bitmapOff = headerLenV1
	case 2:
		need = headerLenV2
		be := binary.BigEndian
		mtime = be.Uint32(b[4104:4108])
		size = be.Uint64(b[4108:4116])
		ss = int32(be.Uint32(b[4116:4120]))
		path = b[8 : 8+pathLenV3]
		bitmapOff = headerLenV2
	case 3:
		be := binary.BigEndian
		if n >= 36 && be.Uint32(b[32:36]) == 0 {
			need = headerLenV3Unpacked
			mtime = ntohl(uint32(binary.NativeEndian.Uint64(b[8:16])))
			size = be.Uint64(b[16:24])
			ss = int32(be.Uint32(b[24:28]))
			align = be.Uint32(b[28:32])
			path = b[36 : 36+pathLenV3]
		} else {
			need = headerLenV3
			mtime = be.Uint32(b[8:12])
			size = be.Uint64(b[12:20])
			ss = int32(be.Uint32(b[20:24]))
			align = be.Uint32(b[24:28])
			if format := be.Uint32(b[28:32]); format != 0 {
				return Header{}, fmt.Errorf("unsupported COW format %d: only the bitmap format 0 exists", format)
			}
			path = b[32 : 32+pathLenV3]
		}
	default:
		return Header{}, fmt.Errorf("unsupported COW header version %d: only 1, 2 and 3 exist", version)
	}
	if n < need {
		return Header{}, fmt.Errorf("truncated COW header: the file has %d bytes, a version %d header has %d", n, version, need)
	}

	nul := bytes.IndexByte(path, 0)
	if nul < 0 {
		return Header{}, fmt.Errorf("corrupt COW header: the backing file path fills its %d bytes without a terminating NUL", len(path))
	}
	h.Backing = string(path[:nul])
	h.MTime = int64(mtime)

	if ss < minSectorSize || ss > maxSectorSize || ss&(ss-1) != 0 {
		return Header{}, fmt.Errorf("corrupt COW header: sector size %d is not a power of two from %d to %d", ss, minSectorSize, maxSectorSize)
	}
	h.SectorSize = int(ss)
	if size > math.MaxInt64 {
		return Header{}, fmt.Errorf("corrupt COW header: backing file size %d is beyond any file's", size)
	}
	h.Size = int64(size)
	if version == 3 {
		if align < minAlignment || align > maxAlignment || align&(align-1) != 0 {
			return Header{}, fmt.Errorf("corrupt COW header: alignment %d is not a power of two from %d to %d", align, minAlignment, maxAlignment)
		}
		h.Alignment = int(align)
		bitmapOff = roundUp(uint64(need), uint64(align))
	}
	if err := h.setLayout(bitmapOff); err != nil {
		return Header{}, fmt.Errorf("corrupt COW header: %w", err)
	}
	return h, nil
}

// setLayout sets the bitmap's length and the data offset from the bitmap
// offset as cow_sizes does, and checks that the kernel can hold them.
func (h *Header) setLayout(bitmapOff uint64) error {
	size, ss := uint64(h.Size), uint64(h.SectorSize)
	var bitmapLen, dataOff uint64
	if h.Version < 3 {
		// Before v3, the bitmap was a byte short whenever the sector count is
		// not a multiple of 8; the kernel keeps that for these versions.
		bitmapLen = (size + ss - 1) / (8 * ss)
		dataOff = roundUp(bitmapOff+bitmapLen, ss)
	} else {
		bitmapLen = ceilDiv(ceilDiv(size, ss), 8)
		dataOff = roundUp(bitmapOff+bitmapLen, uint64(h.Alignment))
	}
	if dataOff > maxDataOffset {
		return fmt.Errorf("a backing file of %d bytes needs its data at offset %d, beyond the %d the kernel can address", size, dataOff, maxDataOffset)
	}
	if size > math.MaxInt64-dataOff {
		return fmt.Errorf("a backing file of %d bytes would make a COW file larger than any file", size)
	}
	h.BitmapOffset, h.BitmapLen, h.DataOffset = int64(bitmapOff), int64(bitmapLen), int64(dataOff)
	return nil
}

// Read reads the header of the COW file at path.
func Read(path string) (Header, error) {
	f, err := openRegular(path, "COW file", os.O_RDONLY)
	if err != nil {
		return Header{}, fmt.Errorf("reading COW file %s: %w", path, err)
	}
	defer f.Close()
	h, err := ReadHeader(f)
	if err != nil {
		return Header{}, fmt.Errorf("reading COW file %s: %w", path, err)
	}
	return h, nil
}

// Matches checks fi, the backing file's (from os.Stat: the kernel follows
// symbolic links), against the size and mtime the header stored, as the
// kernel does before it uses the COW file. The kernel compares the stored
// 32-bit mtime, zero-extended, with the whole mtime in seconds. For a block
// device the kernel takes the device's size, which fi does not have: fi must
// be a regular file's.
func (h Header) Matches(fi fs.FileInfo) error {
	backing := printable.Line(h.Backing)
	if fi == nil {
		return fmt.Errorf("checking backing file %s: no file information", backing)
	}
	size, mtime := fi.Size(), fi.ModTime().Unix()
	if size == h.Size && mtime == h.MTime {
		return nil
	}
	var diff string
	if size != h.Size {
		diff = fmt.Sprintf("its size is %d bytes, the COW header says %d", size, h.Size)
	}
	if mtime != h.MTime {
		if diff != "" {
			diff += " and "
		}
		diff += fmt.Sprintf("it was modified at %s, the COW header says %s", FormatMTime(mtime), FormatMTime(h.MTime))
	}
	hint := "restore the backing file the COW file was made from, or recreate the COW file, which discards the guest's changes"
	if size == h.Size {
		hint = fmt.Sprintf("if its contents did not change (it was only touched), touch -d @%d %s restores the mtime; otherwise %s", h.MTime, backing, hint)
	}
	return fmt.Errorf("backing file %s changed since the COW file was made: %s; the kernel refuses such a COW file and panics at boot; %s",
		backing, diff, hint)
}

// FormatMTime is an mtime in seconds as UTC and as the number touch -d @
// takes.
func FormatMTime(sec int64) string {
	return fmt.Sprintf("%s (%d)", time.Unix(sec, 0).UTC().Format("2006-01-02 15:04:05 UTC"), sec)
}

// ntohl is the C function: the big-endian reading of x's native bytes.
func ntohl(x uint32) uint32 {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], x)
	return binary.BigEndian.Uint32(b[:])
}

// ceilDiv is ⌈x/d⌉ without the overflow of (x+d-1)/d.
func ceilDiv(x, d uint64) uint64 {
	q := x / d
	if x%d != 0 {
		q++
	}
	return q
}

// roundUp rounds x up to a multiple of align, for x far below 2^64.
func roundUp(x, align uint64) uint64 {
	return ceilDiv(x, align) * align
}
