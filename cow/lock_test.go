package cow

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"umlsd/internal/testbed"
)

func TestMain(m *testing.M) {
	if testbed.RunLockHolder() {
		return
	}
	os.Exit(m.Run())
}

// startGuest starts a process that locks files as a UML kernel does (see
// testbed.HoldLocks), and returns its pid; it ends with the test.
func startGuest(t *testing.T, spec string) int {
	t.Helper()
	return testbed.HoldLocks(t, spec)
}

func TestMergeRefusesWhileGuestRuns(t *testing.T) {
	dir := testbed.PhysicalTempDir(t)
	backing := filepath.Join(dir, "root.img")
	makeBacking(t, backing, 64<<10, backingKinds[1])
	cowPath := filepath.Join(dir, "root.cow")
	makeCOW(t, cowPath, backing, 3, 64<<10, map[int64][]byte{3: sectorData(3, 'c')})
	otherCOW := filepath.Join(dir, "other.cow")
	makeCOW(t, otherCOW, backing, 3, 64<<10, nil)
	before := readFile(t, backing)

	tests := []struct {
		name    string
		locks   string // as the guest's kernel takes them
		inPlace bool
		want    string // "": the merge works
	}{
		{"guest on this COW file", "w:" + cowPath + ",r:" + backing, false, "COW file " + cowPath + " is in use by process %d (a running guest?); stop the guest first"},
		{"guest on this COW file, in place", "w:" + cowPath + ",r:" + backing, true, "COW file " + cowPath + " is in use by process %d"},
		{"guest on another COW file", "w:" + otherCOW + ",r:" + backing, false, ""},
		{"guest on another COW file, in place", "w:" + otherCOW + ",r:" + backing, true, "backing file " + backing + " is in use by process %d (a running guest?)"},
		{"guest writing the backing file", "w:" + backing, false, "backing file " + backing + " is in use by process %d"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pid := startGuest(t, tt.locks)
			var err error
			newPath := filepath.Join(dir, fmt.Sprintf("new%d.img", i))
			if tt.inPlace {
				err = MergeInPlace(context.Background(), cowPath, MergeOptions{BackingWritable: anyBacking})
			} else {
				err = Merge(context.Background(), cowPath, newPath, MergeOptions{})
			}
			if tt.want == "" {
				if err != nil {
					t.Errorf("merge: %v", err)
				}
				return
			}
			want := fmt.Sprintf(tt.want, pid)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("merge: %v, want an error with %q", err, want)
			}
			var inUse *InUseError
			if !errors.As(err, &inUse) || inUse.PID != pid {
				t.Errorf("merge: %#v, want an InUseError for pid %d", err, pid)
			}
			if _, err := os.Lstat(newPath); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s: %v; want it absent", newPath, err)
			}
		})
	}
	if string(before) != string(readFile(t, backing)) {
		t.Errorf("a refused merge in place changed the backing file")
	}
	noTemporaryFiles(t, dir)
}

func TestLockHolder(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, p := range []string{a, b} {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	pid := startGuest(t, "w:"+a+",r:"+b)
	tests := []struct {
		path  string
		write bool
		want  int
	}{
		{a, false, pid},
		{a, true, pid},
		{b, false, 0}, // read locks share
		{b, true, pid},
	}
	for _, tt := range tests {
		if got, err := LockHolder(tt.path, tt.write); err != nil || got != tt.want {
			t.Errorf("LockHolder(%s, %v) = %d, %v; want %d", filepath.Base(tt.path), tt.write, got, err, tt.want)
		}
	}
	if _, err := LockHolder(filepath.Join(dir, "none"), true); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LockHolder of a missing file: %v, want it not to exist", err)
	}
}
