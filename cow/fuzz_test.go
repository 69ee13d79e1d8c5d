package cow

import (
	"bytes"
	"math"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func FuzzReadHeader(f *testing.F) {
	for _, h := range []rawHeader{
		v1Fixture, v2Fixture, v3Fixture,
		v1Fixture.with(func(h *rawHeader) { h.otherOrder = true; h.size = 1000 }),
		v2Fixture.with(func(h *rawHeader) { h.sectorSize = 4096 }),
		v3Fixture.with(func(h *rawHeader) { h.unpacked = true }),
		v3Fixture.with(func(h *rawHeader) { h.path = "/a\x00garbage"; h.align = 512; h.size = 1 << 30 }),
		v3Fixture.with(func(h *rawHeader) { h.size = math.MaxInt64 }),
	} {
		b := h.encode()
		f.Add(b)
		f.Add(b[:len(b)-1])
		f.Add(b[:8])
	}
	f.Add(readFile(f, "testdata/uml_mkcow-1g.head"))
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := ReadHeader(bytes.NewReader(data))
		if err != nil {
			if diff := cmp.Diff(Header{}, h); diff != "" {
				t.Fatalf("ReadHeader returned a header beside its error %v:\n%s", err, diff)
			}
			return
		}
		minBitmap := map[int]int64{1: headerLenV1, 2: headerLenV2, 3: headerLenV3}[h.Version]
		align := int64(h.SectorSize)
		if h.Version == 3 {
			align = int64(h.Alignment)
			if h.Alignment < 512 || h.Alignment&(h.Alignment-1) != 0 {
				t.Fatalf("alignment %d: %+v", h.Alignment, h)
			}
		} else if h.Alignment != 0 {
			t.Fatalf("alignment %d in a version %d header", h.Alignment, h.Version)
		}
		switch {
		case minBitmap == 0:
			t.Fatalf("version %d", h.Version)
		case h.SectorSize < 512 || h.SectorSize > 65536 || h.SectorSize&(h.SectorSize-1) != 0:
			t.Fatalf("sector size %d", h.SectorSize)
		case h.Size < 0 || h.MTime < 0 || h.MTime > math.MaxUint32:
			t.Fatalf("size %d, mtime %d", h.Size, h.MTime)
		case h.BitmapOffset < minBitmap || h.BitmapLen < 0:
			t.Fatalf("bitmap at %d, %d bytes", h.BitmapOffset, h.BitmapLen)
		case h.Version == 3 && h.BitmapOffset%align != 0:
			t.Fatalf("bitmap at %d, not aligned to %d", h.BitmapOffset, align)
		case h.Version == 3 && h.BitmapLen*8*int64(h.SectorSize) < h.Size:
			t.Fatalf("bitmap of %d bytes for %d bytes", h.BitmapLen, h.Size)
		case h.DataOffset < h.BitmapOffset+h.BitmapLen || h.DataOffset%align != 0 || h.DataOffset > math.MaxInt32:
			t.Fatalf("data at %d, bitmap at %d, %d bytes", h.DataOffset, h.BitmapOffset, h.BitmapLen)
		case h.DataOffset > math.MaxInt64-h.Size:
			t.Fatalf("data at %d, %d bytes: beyond any file", h.DataOffset, h.Size)
		case strings.IndexByte(h.Backing, 0) >= 0:
			t.Fatalf("backing file %q with a NUL", h.Backing)
		}
	})
}
