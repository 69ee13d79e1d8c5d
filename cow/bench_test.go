package cow

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"umlsd/internal/testbed"
)

// benchImage makes what a guest's disk looks like: a 1 GiB sparse ext4
// image with about 60 MB of files, some of them zeros, and a COW file on
// it with about 4 MB of dirty sectors in runs all over the image.
func benchImage(b *testing.B) (dir, backing, cowPath string) {
	b.Helper()
	testbed.RequireCommands(b, "mke2fs", "uml_moo")
	dir, err := filepath.EvalSymlinks(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	root := filepath.Join(dir, "root")
	rng := rand.New(rand.NewChaCha8([32]byte{1}))
	for i := range 300 {
		sub := filepath.Join(root, fmt.Sprintf("d%02d", i%20))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			b.Fatal(err)
		}
		data := make([]byte, rng.IntN(400<<10))
		if i%7 != 0 { // a few files of zeros
			for j := range data {
				data[j] = byte(rng.Uint32()) | 1
			}
		}
		if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%03d", i)), data, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	backing = filepath.Join(dir, "root.img")
	if out, err := exec.Command("mke2fs", "-q", "-F", "-t", "ext4", "-d", root, backing, "1G").CombinedOutput(); err != nil {
		b.Fatalf("mke2fs: %v\n%s", err, out)
	}
	if err := os.RemoveAll(root); err != nil {
		b.Fatal(err)
	}
	cowPath = filepath.Join(dir, "root.cow")
	if err := Create(cowPath, backing); err != nil {
		b.Fatal(err)
	}
	h, err := Read(cowPath)
	if err != nil {
		b.Fatal(err)
	}
	f, err := os.OpenFile(cowPath, os.O_RDWR, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	bitmap := make([]byte, h.BitmapLen)
	sectors := h.Size / 512
	for range 256 { // 256 runs of 1 to 31 sectors: about 4 MB
		first, n := rng.Int64N(sectors-32), 1+rng.Int64N(31)
		data := make([]byte, n*512)
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		if rng.IntN(8) == 0 { // some zeroed sectors
			clear(data)
		}
		if _, err := f.WriteAt(data, h.DataOffset+first*512); err != nil {
			b.Fatal(err)
		}
		for i := first; i < first+n; i++ {
			bitmap[i/8] |= 1 << (i % 8)
		}
	}
	if _, err := f.WriteAt(bitmap, h.BitmapOffset); err != nil {
		b.Fatal(err)
	}
	return dir, backing, cowPath
}

func dropCaches(b *testing.B) {
	b.Helper()
	exec.Command("sync").Run()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0); err != nil {
		b.Fatalf("dropping the page cache: %v", err)
	}
}

// BenchmarkMerge merges a COW file of a 1 GiB image with Merge and with
// uml_moo, with the page cache dropped before each merge (cold) or not
// (warm), and reports how many times faster Merge is. It checks first
// that both give the same image.
func BenchmarkMerge(b *testing.B) {
	testbed.RequireRoot(b)
	dir, _, cowPath := benchImage(b)
	ref := filepath.Join(dir, "moo.img")
	out := filepath.Join(dir, "merged.img")
	runMoo := func(cold bool) time.Duration {
		os.Remove(ref)
		if cold {
			dropCaches(b)
		}
		start := time.Now()
		if out, err := exec.Command("uml_moo", cowPath, ref).CombinedOutput(); err != nil {
			b.Fatalf("uml_moo: %v\n%s", err, out)
		}
		return time.Since(start)
	}
	for _, cold := range []bool{true, false} {
		name := "warm"
		if cold {
			name = "cold"
		}
		b.Run(name, func(b *testing.B) {
			if !cold {
				runMoo(false) // to warm the cache
			}
			moo := runMoo(cold)
			var total time.Duration
			for b.Loop() {
				b.StopTimer()
				os.Remove(out)
				if cold {
					dropCaches(b)
				}
				b.StartTimer()
				start := time.Now()
				if err := Merge(context.Background(), cowPath, out, MergeOptions{}); err != nil {
					b.Fatal(err)
				}
				total += time.Since(start)
			}
			b.StopTimer()
			if err := sameImage(ref, out); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(moo.Seconds()*1e3, "ms-uml_moo")
			b.ReportMetric(float64(moo)/float64(total/time.Duration(b.N)), "x-vs-uml_moo")
		})
	}
}

// sameImage checks that got has ref's bytes and, once both are synced, no
// more blocks.
func sameImage(ref, got string) error {
	for _, p := range []string{ref, got} {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		err = f.Sync()
		f.Close()
		if err != nil {
			return err
		}
	}
	if out, err := exec.Command("cmp", ref, got).CombinedOutput(); err != nil {
		return fmt.Errorf("cmp %s %s: %v: %s", ref, got, err, out)
	}
	var rs, gs unix.Stat_t
	if err := unix.Stat(ref, &rs); err != nil {
		return err
	}
	if err := unix.Stat(got, &gs); err != nil {
		return err
	}
	if gs.Blocks > rs.Blocks {
		return fmt.Errorf("%s takes %d blocks, more than uml_moo's %d", got, gs.Blocks, rs.Blocks)
	}
	return nil
}
