package testbed

import (
	"path/filepath"
	"testing"
)

// PhysicalTempDir is t.TempDir without symbolic links in its path, as
// the kernel's getcwd and so a COW header name it.
func PhysicalTempDir(t testing.TB) string {
	t.Helper()
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return dir
}
