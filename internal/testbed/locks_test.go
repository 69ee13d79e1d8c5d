package testbed

import (
	"io"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	if RunLockHolder() {
		return
	}
	os.Exit(m.Run())
}

func TestHoldLocks(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, p := range []string{a, b} {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	pid := HoldLocks(t, "w:"+a+",r:"+b)
	tests := []struct {
		path string
		typ  int16 // the lock asked for
		want int32 // the holder of a conflicting lock, 0 for none
	}{
		{a, unix.F_RDLCK, int32(pid)},
		{b, unix.F_RDLCK, 0}, // read locks share
		{b, unix.F_WRLCK, int32(pid)},
	}
	for _, tt := range tests {
		f, err := os.Open(tt.path)
		if err != nil {
			t.Fatal(err)
		}
		lk := unix.Flock_t{Type: tt.typ, Whence: io.SeekStart}
		err = unix.FcntlFlock(f.Fd(), unix.F_GETLK, &lk)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if lk.Type == unix.F_UNLCK {
			lk.Pid = 0
		}
		if lk.Pid != tt.want {
			t.Errorf("holder of a lock conflicting with type %d on %s: %d, want %d", tt.typ, filepath.Base(tt.path), lk.Pid, tt.want)
		}
	}
}
