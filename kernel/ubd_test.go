package kernel_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"umlsd/cow"
	"umlsd/internal/testbed"
	"umlsd/internal/umltest"
)

// lazyInit is the init of the block device test's guest: it waits for
// ext4's lazy inode table initialisation, which zeroes every group's inode
// table through write-zeroes requests, trims the file system (discards),
// and powers off with the file system clean.
const lazyInit = `#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
echo "UMLSD-INIT"
i=0
while $B ps | $B grep -q '[e]xt4lazyinit'; do
	i=$((i + 1))
	[ $i -gt 300 ] && { echo "UMLSD-LAZYINIT: timeout"; break; }
	$B sleep 0.1
done
echo "UMLSD-LAZYINIT: done"
$B fstrim / && echo "UMLSD-FSTRIM: ok"
$B sync
$B mount -o remount,ro /
$B poweroff -f
`

// busyboxImage makes an ext4 image at path holding busybox and init as
// /sbin/init, made by mke2fs with the given extended options.
func busyboxImage(t testing.TB, path, init, extended string) {
	t.Helper()
	tree := t.TempDir()
	for _, d := range []string{"bin", "sbin", "proc", "dev"} {
		if err := os.Mkdir(filepath.Join(tree, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	busybox, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "bin", "busybox"), busybox, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "sbin", "init"), []byte(init), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mke2fs", "-q", "-F", "-t", "ext4", "-E", extended, "-d", tree, path, "32M").CombinedOutput()
	if err != nil {
		t.Fatalf("mke2fs: %v\n%s", err, out)
	}
}

// lazyImage is an ext4 image whose inode tables the kernel still has to
// zero: without discard, mke2fs cannot know them zeroed and leaves that to
// the guest's first mount.
func lazyImage(t *testing.T, path string) {
	t.Helper()
	busyboxImage(t, path, lazyInit, "lazy_itable_init=1,nodiscard")
	if zeroed, _ := zeroedGroups(t, path); zeroed != 0 {
		t.Fatalf("mke2fs zeroed %d inode tables: the guest would not zero them", zeroed)
	}
}

// zeroedGroups says how many of the block groups of an ext4 image have
// their inode table zeroed.
func zeroedGroups(t *testing.T, path string) (zeroed, groups int) {
	t.Helper()
	out, err := exec.Command("dumpe2fs", path).Output()
	if err != nil {
		t.Fatalf("dumpe2fs %s: %v", path, err)
	}
	groups = len(regexp.MustCompile(`(?m)^Group \d+:`).FindAllIndex(out, -1))
	return strings.Count(string(out), "ITABLE_ZEROED"), groups
}

// blockErrors are the block layer's complaints about a request.
var blockErrors = regexp.MustCompile(`(?m)^.*error, dev ubd.*$`)

// TestWriteZeroesOnTmpfs boots umlsd's kernel on a root device whose file
// (the COW file, or the image itself) is on tmpfs, which cannot zero a
// range in place (FALLOC_FL_ZERO_RANGE) but can punch holes: ext4's lazy
// inode table initialisation and fstrim run without a block-layer error,
// and the file system is whole afterwards. (Debian's kernel fails each
// such write-zeroes request with "operation not supported error, dev ubda
// ... op 0x9:(WRITE_ZEROES)" first.)
func TestWriteZeroesOnTmpfs(t *testing.T) {
	kernel := testbed.ProjectKernel(t)
	testbed.RequireCommands(t, "busybox", "mke2fs", "e2fsck", "dumpe2fs")
	shm, err := os.MkdirTemp("/dev/shm", "umlsd-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(shm) })
	var fs unix.Statfs_t
	if err := unix.Statfs(shm, &fs); err != nil || fs.Type != unix.TMPFS_MAGIC {
		t.Fatalf("%s is not on tmpfs (%v): the test needs a file system without FALLOC_FL_ZERO_RANGE", shm, err)
	}
	for _, tt := range []struct {
		name string
		cow  bool
	}{
		{"COW file on tmpfs", true},
		{"image on tmpfs", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			img, cowFile := filepath.Join(t.TempDir(), "root.img"), filepath.Join(shm, "root.cow")
			ubd := "ubd0=" + cowFile + "," + img
			if !tt.cow {
				img = filepath.Join(shm, "root.img")
				ubd = "ubd0=" + img
			}
			lazyImage(t, img)
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			k := umltest.Start(t, exec.Command(kernel, ubd, "root=/dev/ubda", "rw", "mem=64M",
				"con=null", "ssl=null", "con0=fd:0,fd:1", "umid=zeroes", "uml_dir="+t.TempDir()))
			if _, err := k.Wait(ctx); err != nil {
				t.Fatalf("the guest did not power off: %v", err)
			}
			console := k.Console.String()
			for _, want := range []string{"UMLSD-LAZYINIT: done", "UMLSD-FSTRIM: ok"} {
				if !strings.Contains(console, want) {
					t.Errorf("the console lacks %q", want)
				}
			}
			if errs := blockErrors.FindAllString(console, -1); len(errs) > 0 {
				t.Errorf("block-layer errors on the console:\n%s", strings.Join(errs, "\n"))
			}
			result := img
			if tt.cow {
				result = filepath.Join(t.TempDir(), "merged.img")
				if err := cow.Merge(ctx, cowFile, result, cow.MergeOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			if zeroed, groups := zeroedGroups(t, result); zeroed != groups {
				t.Errorf("%d of the %d inode tables zeroed after the guest's lazy init", zeroed, groups)
			}
			if out, err := exec.Command("e2fsck", "-fn", result).CombinedOutput(); err != nil {
				t.Errorf("e2fsck -fn: %v\n%s", err, out)
			}
			if t.Failed() {
				t.Logf("console:\n%s", console)
			}
		})
	}
}
