package cow

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"umlsd/internal/testbed"

	"github.com/google/go-cmp/cmp"
)

func TestReadInfoDirty(t *testing.T) {
	tests := []struct {
		name    string
		version uint32
		size    int64
		bitmap  []byte // written over the bitmap
		sectors int64  // want
		bytes   int64
	}{
		{"none", 3, 5 << 10, nil, 0, 0},
		{"v3 some", 3, 5 << 10, []byte{0b1000_0001, 0b10}, 3, 1536},
		// Bits past sector 9 (of 10) do not count.
		{"v3 bits past the end", 3, 5 << 10, []byte{0xff, 0xff}, 10, 5120},
		// The partial last sector counts its bytes only.
		{"v3 partial last sector", 3, 5<<10 + 100, []byte{0, 0b110}, 2, 612},
		// A v1 or v2 bitmap is a byte short: 1 byte for 10 sectors.
		{"v2 short bitmap", 2, 5 << 10, []byte{0xff, 0xff}, 8, 4096},
		{"v1", 1, 64 << 10, []byte{1, 0, 0, 0, 0, 0, 0, 0x80}, 2, 1024},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := testbed.PhysicalTempDir(t)
			backing := filepath.Join(dir, "root.img")
			makeBacking(t, backing, tt.size, backingKinds[0])
			cowPath := filepath.Join(dir, "root.cow")
			h := makeCOW(t, cowPath, backing, tt.version, tt.size, nil)
			f, err := os.OpenFile(cowPath, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			_, err = f.WriteAt(tt.bitmap, h.BitmapOffset)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				t.Fatal(err)
			}
			in, err := ReadInfo(cowPath)
			if err != nil {
				t.Fatal(err)
			}
			type counts struct{ Sectors, Bytes, FileSize int64 }
			if diff := cmp.Diff(counts{tt.sectors, tt.bytes, h.DataOffset + tt.size}, counts{in.DirtySectors, in.DirtyBytes, in.FileSize}); diff != "" {
				t.Errorf("ReadInfo (-want +got):\n%s", diff)
			}
			if !in.BackingFound || in.BackingProblem != nil {
				t.Errorf("backing file found %v, problem %v; want found, no problem", in.BackingFound, in.BackingProblem)
			}
		})
	}
}

func TestReadInfoBacking(t *testing.T) {
	dir := testbed.PhysicalTempDir(t)
	backing := filepath.Join(dir, "root.img")
	makeBacking(t, backing, 4096, backingKinds[1])
	cowPath := filepath.Join(dir, "root.cow")
	makeCOW(t, cowPath, backing, 3, 4096, nil)
	if err := os.Truncate(backing, 8192); err != nil {
		t.Fatal(err)
	}
	in, err := ReadInfo(cowPath)
	if err != nil {
		t.Fatal(err)
	}
	if !in.BackingFound || in.BackingSize != 8192 || in.BackingProblem == nil || !strings.Contains(in.BackingProblem.Error(), "its size is 8192 bytes, the COW header says 4096") {
		t.Errorf("grown backing file: found %v, size %d, problem %v", in.BackingFound, in.BackingSize, in.BackingProblem)
	}
	if err := os.Remove(backing); err != nil {
		t.Fatal(err)
	}
	if in, err = ReadInfo(cowPath); err != nil {
		t.Fatal(err)
	}
	if want := "backing file " + backing + " does not exist"; in.BackingFound || in.BackingProblem == nil || !strings.Contains(in.BackingProblem.Error(), want) {
		t.Errorf("missing backing file: found %v, problem %v; want %q", in.BackingFound, in.BackingProblem, want)
	}
}
