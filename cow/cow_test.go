package cow

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io/fs"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// rawHeader is a header's fields as a file holds them, for encode.
type rawHeader struct {
	version    uint32
	mtime      uint32
	size       uint64
	sectorSize uint32
	align      uint32 // v3
	format     uint32 // v3
	path       string // copied into the path field: may hold a NUL and garbage after it
	unpacked   bool   // v3 as 64-bit writers laid it out before 2006
	otherOrder bool   // magic and version in the byte order the version does not use
}

// encode lays h out as the writers of each version did: v1 in native byte
// order, v2 and v3 big-endian, all packed but the unpacked v3.
func (h rawHeader) encode() []byte {
	var order, headOrder binary.ByteOrder = binary.BigEndian, binary.BigEndian
	if h.version == 1 {
		order, headOrder = binary.NativeEndian, binary.NativeEndian
	}
	if h.otherOrder {
		headOrder = binary.LittleEndian
		if headOrder == order {
			headOrder = binary.BigEndian
		}
	}
	var b []byte
	switch {
	case h.version == 1:
		b = make([]byte, headerLenV1)
		copy(b[8:8+pathLenV1], h.path)
		order.PutUint32(b[264:], h.mtime)
		order.PutUint64(b[268:], h.size)
		order.PutUint32(b[276:], h.sectorSize)
	case h.version == 3 && h.unpacked:
		b = make([]byte, headerLenV3Unpacked)
		// mtime was htonl(mtime) stored in a native 64-bit time_t.
		binary.NativeEndian.PutUint64(b[8:], uint64(ntohl(h.mtime)))
		order.PutUint64(b[16:], h.size)
		order.PutUint32(b[24:], h.sectorSize)
		order.PutUint32(b[28:], h.align)
		order.PutUint32(b[32:], h.format)
		copy(b[36:36+pathLenV3], h.path)
	case h.version == 3:
		b = make([]byte, headerLenV3)
		order.PutUint32(b[8:], h.mtime)
		order.PutUint64(b[12:], h.size)
		order.PutUint32(b[20:], h.sectorSize)
		order.PutUint32(b[24:], h.align)
		order.PutUint32(b[28:], h.format)
		copy(b[32:32+pathLenV3], h.path)
	default: // v2, and the layout of v2 for unknown versions
		b = make([]byte, headerLenV2)
		copy(b[8:8+pathLenV3], h.path)
		order.PutUint32(b[4104:], h.mtime)
		order.PutUint64(b[4108:], h.size)
		order.PutUint32(b[4116:], h.sectorSize)
	}
	headOrder.PutUint32(b[0:], magic)
	headOrder.PutUint32(b[4:], h.version)
	return b
}

// The headers of the fixtures, one of each kind.
var (
	v1Fixture = rawHeader{version: 1, mtime: 1700000000, size: 1 << 20, sectorSize: 512, path: "/var/lib/uml/v1.img"}
	v2Fixture = rawHeader{version: 2, mtime: 1700000000, size: 1 << 20, sectorSize: 512, path: "/var/lib/uml/v2.img"}
	v3Fixture = rawHeader{version: 3, mtime: 1700000000, size: 1000, sectorSize: 512, align: 4096, path: "/var/lib/uml/v3.img"}
)

// with is h changed by f, for table entries.
func (h rawHeader) with(f func(*rawHeader)) rawHeader {
	f(&h)
	return h
}

func TestReadHeader(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		want Header
	}{
		{"v1", v1Fixture.encode(), Header{
			Version: 1, Backing: "/var/lib/uml/v1.img", MTime: 1700000000, Size: 1 << 20, SectorSize: 512,
			// bitmap: (size+511)/4096 bytes; data at the next sector
			BitmapOffset: 280, BitmapLen: 256, DataOffset: 1024,
		}},
		{"v1 keeps the short bitmap of a sector count not a multiple of 8",
			v1Fixture.with(func(h *rawHeader) { h.size = 1000 }).encode(), Header{
				Version: 1, Backing: "/var/lib/uml/v1.img", MTime: 1700000000, Size: 1000, SectorSize: 512,
				BitmapOffset: 280, BitmapLen: 0, DataOffset: 512,
			}},
		{"v1 with its magic in the other byte order reads only the version in it",
			v1Fixture.with(func(h *rawHeader) { h.otherOrder = true }).encode(), Header{
				Version: 1, Backing: "/var/lib/uml/v1.img", MTime: 1700000000, Size: 1 << 20, SectorSize: 512,
				BitmapOffset: 280, BitmapLen: 256, DataOffset: 1024,
			}},
		{"v2", v2Fixture.encode(), Header{
			Version: 2, Backing: "/var/lib/uml/v2.img", MTime: 1700000000, Size: 1 << 20, SectorSize: 512,
			BitmapOffset: 4120, BitmapLen: 256, DataOffset: 4608,
		}},
		{"v2 with 4096-byte sectors", v2Fixture.with(func(h *rawHeader) { h.sectorSize = 4096; h.size = 1 << 30 }).encode(), Header{
			Version: 2, Backing: "/var/lib/uml/v2.img", MTime: 1700000000, Size: 1 << 30, SectorSize: 4096,
			BitmapOffset: 4120, BitmapLen: 32768, DataOffset: 40960,
		}},
		{"v3", v3Fixture.encode(), Header{
			Version: 3, Backing: "/var/lib/uml/v3.img", MTime: 1700000000, Size: 1000, SectorSize: 512, Alignment: 4096,
			BitmapOffset: 8192, BitmapLen: 1, DataOffset: 12288,
		}},
		{"v3 of 0 bytes", v3Fixture.with(func(h *rawHeader) { h.size = 0 }).encode(), Header{
			Version: 3, Backing: "/var/lib/uml/v3.img", MTime: 1700000000, Size: 0, SectorSize: 512, Alignment: 4096,
			BitmapOffset: 8192, BitmapLen: 0, DataOffset: 8192,
		}},
		{"v3 aligned to 512", v3Fixture.with(func(h *rawHeader) { h.align = 512; h.size = 1 << 30 }).encode(), Header{
			Version: 3, Backing: "/var/lib/uml/v3.img", MTime: 1700000000, Size: 1 << 30, SectorSize: 512, Alignment: 512,
			BitmapOffset: 4608, BitmapLen: 262144, DataOffset: 266752,
		}},
		{"v3 aligned to 64 KiB", v3Fixture.with(func(h *rawHeader) { h.align = 64 << 10 }).encode(), Header{
			Version: 3, Backing: "/var/lib/uml/v3.img", MTime: 1700000000, Size: 1000, SectorSize: 512, Alignment: 64 << 10,
			BitmapOffset: 64 << 10, BitmapLen: 1, DataOffset: 128 << 10,
		}},
		{"v3 with garbage after the path's NUL", v3Fixture.with(func(h *rawHeader) { h.path = "/a\x00garbage\xff" }).encode(), Header{
			Version: 3, Backing: "/a", MTime: 1700000000, Size: 1000, SectorSize: 512, Alignment: 4096,
			BitmapOffset: 8192, BitmapLen: 1, DataOffset: 12288,
		}},
		{"v3 mtime is unsigned", v3Fixture.with(func(h *rawHeader) { h.mtime = math.MaxUint32 }).encode(), Header{
			Version: 3, Backing: "/var/lib/uml/v3.img", MTime: math.MaxUint32, Size: 1000, SectorSize: 512, Alignment: 4096,
			BitmapOffset: 8192, BitmapLen: 1, DataOffset: 12288,
		}},
		{"v3 with its magic in native byte order", v3Fixture.with(func(h *rawHeader) { h.otherOrder = true }).encode(), Header{
			Version: 3, Backing: "/var/lib/uml/v3.img", MTime: 1700000000, Size: 1000, SectorSize: 512, Alignment: 4096,
			BitmapOffset: 8192, BitmapLen: 1, DataOffset: 12288,
		}},
		{"v3 in the unpacked layout", v3Fixture.with(func(h *rawHeader) { h.unpacked = true; h.align = 512 }).encode(), Header{
			Version: 3, Backing: "/var/lib/uml/v3.img", MTime: 1700000000, Size: 1000, SectorSize: 512, Alignment: 512,
			BitmapOffset: 4608, BitmapLen: 1, DataOffset: 5120,
		}},
		{"v3 at the kernel's limit", v3Fixture.with(func(h *rawHeader) { h.size = (math.MaxInt32 + 1 - 12288) * 8 * 512 }).encode(), Header{
			Version: 3, Backing: "/var/lib/uml/v3.img", MTime: 1700000000, Size: (math.MaxInt32 + 1 - 12288) * 8 * 512, SectorSize: 512, Alignment: 4096,
			BitmapOffset: 8192, BitmapLen: math.MaxInt32 + 1 - 12288, DataOffset: math.MaxInt32 + 1 - 4096,
		}},
		{"v3 followed by a bitmap", append(v3Fixture.encode(), make([]byte, 8192)...), Header{
			Version: 3, Backing: "/var/lib/uml/v3.img", MTime: 1700000000, Size: 1000, SectorSize: 512, Alignment: 4096,
			BitmapOffset: 8192, BitmapLen: 1, DataOffset: 12288,
		}},
		// The first 8 KiB of `uml_mkcow ref.cow root.img` in /tmp/cow-fixture,
		// with root.img 1 GiB, touched at @1700000000.
		{"uml_mkcow", readFile(t, "testdata/uml_mkcow-1g.head"), Header{
			Version: 3, Backing: "/tmp/cow-fixture/root.img", MTime: 1700000000, Size: 1 << 30, SectorSize: 512, Alignment: 4096,
			BitmapOffset: 8192, BitmapLen: 262144, DataOffset: 270336,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadHeader(bytes.NewReader(tt.data))
			if err != nil {
				t.Fatalf("ReadHeader: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ReadHeader (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReadHeaderRefuses(t *testing.T) {
	v3 := v3Fixture.encode()
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, ErrNotCOW.Error()},
		{"a magic's prefix", []byte("OOO"), ErrNotCOW.Error()},
		{"a disk image", make([]byte, 8192), ErrNotCOW.Error()},
		{"text", []byte("MOO, said the cow, at length"), ErrNotCOW.Error()},
		{"only a magic number", v3[:4], "truncated COW header: the file has 4 bytes, too few for the version"},
		{"v1 truncated", v1Fixture.encode()[:headerLenV1-1], "truncated COW header: the file has 279 bytes, a version 1 header has 280"},
		{"v1 only to its path", v1Fixture.encode()[:8], "truncated COW header: the file has 8 bytes, a version 1 header has 280"},
		{"v2 truncated", v2Fixture.encode()[:headerLenV2-1], "truncated COW header: the file has 4119 bytes, a version 2 header has 4120"},
		{"v2 cut like a v1", v2Fixture.encode()[:headerLenV1], "truncated COW header: the file has 280 bytes, a version 2 header has 4120"},
		{"v3 truncated", v3[:headerLenV3-1], "truncated COW header: the file has 4127 bytes, a version 3 header has 4128"},
		{"v3 cut in its fields", v3[:20], "truncated COW header: the file has 20 bytes, a version 3 header has 4128"},
		{"unpacked v3 truncated", v3Fixture.with(func(h *rawHeader) { h.unpacked = true }).encode()[:headerLenV3],
			"truncated COW header: the file has 4128 bytes, a version 3 header has 4136"},
		{"version 0", v2Fixture.with(func(h *rawHeader) { h.version = 0 }).encode(), "unsupported COW header version 0: only 1, 2 and 3 exist"},
		{"version 4", v2Fixture.with(func(h *rawHeader) { h.version = 4 }).encode(), "unsupported COW header version 4: only 1, 2 and 3 exist"},
		{"version 2^32-1", v2Fixture.with(func(h *rawHeader) { h.version = math.MaxUint32 }).encode(),
			"unsupported COW header version 4294967295: only 1, 2 and 3 exist"},
		{"cow_format 1", v3Fixture.with(func(h *rawHeader) { h.format = 1 }).encode(), "unsupported COW format 1: only the bitmap format 0 exists"},
		{"v1 path without a NUL", v1Fixture.with(func(h *rawHeader) { h.path = strings.Repeat("a", pathLenV1) }).encode(),
			"corrupt COW header: the backing file path fills its 256 bytes without a terminating NUL"},
		{"v3 path without a NUL", v3Fixture.with(func(h *rawHeader) { h.path = strings.Repeat("a", pathLenV3) }).encode(),
			"corrupt COW header: the backing file path fills its 4096 bytes without a terminating NUL"},
		{"sector size 0", v3Fixture.with(func(h *rawHeader) { h.sectorSize = 0 }).encode(),
			"corrupt COW header: sector size 0 is not a power of two from 512 to 65536"},
		{"sector size 511", v2Fixture.with(func(h *rawHeader) { h.sectorSize = 511 }).encode(),
			"corrupt COW header: sector size 511 is not a power of two from 512 to 65536"},
		{"sector size 1536", v1Fixture.with(func(h *rawHeader) { h.sectorSize = 1536 }).encode(),
			"corrupt COW header: sector size 1536 is not a power of two from 512 to 65536"},
		{"sector size 1 GiB", v3Fixture.with(func(h *rawHeader) { h.sectorSize = 1 << 30 }).encode(),
			"corrupt COW header: sector size 1073741824 is not a power of two from 512 to 65536"},
		{"negative sector size", v2Fixture.with(func(h *rawHeader) { h.sectorSize = 1 << 31 }).encode(),
			"corrupt COW header: sector size -2147483648 is not a power of two from 512 to 65536"},
		{"alignment 0", v3Fixture.with(func(h *rawHeader) { h.align = 0 }).encode(),
			"corrupt COW header: alignment 0 is not a power of two from 512 to 1048576"},
		{"alignment 3000", v3Fixture.with(func(h *rawHeader) { h.align = 3000 }).encode(),
			"corrupt COW header: alignment 3000 is not a power of two from 512 to 1048576"},
		{"alignment 2 GiB", v3Fixture.with(func(h *rawHeader) { h.align = 1 << 31 }).encode(),
			"corrupt COW header: alignment 2147483648 is not a power of two from 512 to 1048576"},
		{"size beyond int64", v3Fixture.with(func(h *rawHeader) { h.size = 1 << 63 }).encode(),
			"corrupt COW header: backing file size 9223372036854775808 is beyond any file's"},
		{"size 2^64-1", v1Fixture.with(func(h *rawHeader) { h.size = math.MaxUint64 }).encode(),
			"corrupt COW header: backing file size 18446744073709551615 is beyond any file's"},
		{"size the largest int64", v2Fixture.with(func(h *rawHeader) { h.size = math.MaxInt64 }).encode(),
			"corrupt COW header: a backing file of 9223372036854775807 bytes needs its data at offset 2251799813689856, beyond the 2147483647 the kernel can address"},
		{"v3 beyond the kernel's limit", v3Fixture.with(func(h *rawHeader) { h.size = (math.MaxInt32+1-12288)*8*512 + 1 }).encode(),
			"corrupt COW header: a backing file of 8796042690561 bytes needs its data at offset 2147483648, beyond the 2147483647 the kernel can address"},
		{"v1 of 16 TiB", v1Fixture.with(func(h *rawHeader) { h.size = 16 << 40 }).encode(),
			"corrupt COW header: a backing file of 17592186044416 bytes needs its data at offset 4294967808, beyond the 2147483647 the kernel can address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadHeader(bytes.NewReader(tt.data))
			if err == nil {
				t.Fatalf("ReadHeader = %+v, want error %q", got, tt.want)
			}
			if diff := cmp.Diff(tt.want, err.Error()); diff != "" {
				t.Errorf("ReadHeader error (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(Header{}, got); diff != "" {
				t.Errorf("ReadHeader returned a header beside its error (-want +got):\n%s", diff)
			}
			if (tt.want == ErrNotCOW.Error()) != errors.Is(err, ErrNotCOW) {
				t.Errorf("errors.Is(%v, ErrNotCOW) = %t", err, errors.Is(err, ErrNotCOW))
			}
		})
	}
}

// failingReader fails every read after giving some bytes.
type failingReader struct{ data []byte }

var errDisk = errors.New("input/output error")

func (r failingReader) ReadAt(p []byte, off int64) (int, error) {
	return copy(p, r.data), errDisk
}

func TestReadHeaderIOError(t *testing.T) {
	_, err := ReadHeader(failingReader{v3Fixture.encode()})
	if !errors.Is(err, errDisk) {
		t.Fatalf("ReadHeader error = %v, want one wrapping %v", err, errDisk)
	}
	if diff := cmp.Diff("reading header: input/output error", err.Error()); diff != "" {
		t.Errorf("ReadHeader error (-want +got):\n%s", diff)
	}
}

func TestRead(t *testing.T) {
	dir := t.TempDir()
	cowPath := dir + "/v2.cow"
	if err := os.WriteFile(cowPath, v2Fixture.encode(), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := Read(cowPath)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if want := "/var/lib/uml/v2.img"; got.Backing != want || got.Version != 2 {
		t.Errorf("Read = %+v, want version 2 backed by %s", got, want)
	}

	plain := dir + "/plain.img"
	if err := os.WriteFile(plain, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		plain:            "reading COW file " + plain + ": " + ErrNotCOW.Error(),
		dir + "/missing": "reading COW file " + dir + "/missing: stat " + dir + "/missing: no such file or directory",
		dir:              "reading COW file " + dir + ": COW file " + dir + " is a directory, not a regular file, so it is not opened; name a regular file instead",
	} {
		_, err := Read(path)
		if err == nil {
			t.Errorf("Read(%s) succeeded, want error %q", path, want)
			continue
		}
		if diff := cmp.Diff(want, err.Error()); diff != "" {
			t.Errorf("Read(%s) error (-want +got):\n%s", path, diff)
		}
	}
}

// fileInfo is a backing file's size and mtime.
type fileInfo struct {
	size  int64
	mtime int64
}

func (fi fileInfo) Name() string       { return "root.img" }
func (fi fileInfo) Size() int64        { return fi.size }
func (fi fileInfo) Mode() fs.FileMode  { return 0o644 }
func (fi fileInfo) ModTime() time.Time { return time.Unix(fi.mtime, 999999999) }
func (fi fileInfo) IsDir() bool        { return false }
func (fi fileInfo) Sys() any           { return nil }

func TestMatches(t *testing.T) {
	h := Header{Version: 3, Backing: "/var/lib/uml/dns/root.img", MTime: 1700000000, Size: 1 << 30}
	const (
		refused   = "; the kernel refuses such a COW file and panics at boot; "
		restore   = "restore the backing file the COW file was made from, or recreate the COW file, which discards the guest's changes"
		touchBack = "if its contents did not change (it was only touched), touch -d @1700000000 /var/lib/uml/dns/root.img restores the mtime; otherwise "
	)
	tests := []struct {
		name string
		fi   fs.FileInfo
		want string // "" for nil
	}{
		{"same", fileInfo{1 << 30, 1700000000}, ""},
		{"touched", fileInfo{1 << 30, 1700000060},
			"backing file /var/lib/uml/dns/root.img changed since the COW file was made: " +
				"it was modified at 2023-11-14 22:14:20 UTC (1700000060), the COW header says 2023-11-14 22:13:20 UTC (1700000000)" +
				refused + touchBack + restore},
		{"grown", fileInfo{2 << 30, 1700000000},
			"backing file /var/lib/uml/dns/root.img changed since the COW file was made: " +
				"its size is 2147483648 bytes, the COW header says 1073741824" + refused + restore},
		{"rewritten", fileInfo{1 << 20, 1700003600},
			"backing file /var/lib/uml/dns/root.img changed since the COW file was made: " +
				"its size is 1048576 bytes, the COW header says 1073741824 and " +
				"it was modified at 2023-11-14 23:13:20 UTC (1700003600), the COW header says 2023-11-14 22:13:20 UTC (1700000000)" +
				refused + restore},
		// The header keeps 32 bits; the kernel compares them, zero-extended,
		// with the whole mtime.
		{"mtime 2^32 later", fileInfo{1 << 30, 1700000000 + 1<<32},
			"backing file /var/lib/uml/dns/root.img changed since the COW file was made: " +
				"it was modified at 2159-12-22 04:41:36 UTC (5994967296), the COW header says 2023-11-14 22:13:20 UTC (1700000000)" +
				refused + touchBack + restore},
		{"no file information", nil, "checking backing file /var/lib/uml/dns/root.img: no file information"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ""
			if err := h.Matches(tt.fi); err != nil {
				got = err.Error()
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Matches (-want +got):\n%s", diff)
			}
		})
	}
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
