package guestimage

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"umlsd/internal/golden"
	"umlsd/internal/testbed"
)

// TestGenerated compares the generated inittab, rc scripts and /etc files
// for a table of Specs with testdata/NAME.golden.
func TestGenerated(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec Spec
	}{
		{"minimal", Spec{}},
		{"full", Spec{
			Hostname: "dns1.example",
			Startup:  "echo starting\nip addr add 10.0.0.2/24 dev vec0",
			Services: []string{"exec dnsmasq --keep-in-foreground", "while :; do date; sleep 60; done > /dev/null"},
			Shutdown: "echo bye > /var/last-words\n",
		}},
		{"ignore", Spec{CtrlAltDel: Ignore, Startup: "echo hi"}},
		{"reboot", Spec{CtrlAltDel: Reboot, Shutdown: "sync"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec, err := tc.spec.withDefaults()
			if err != nil {
				t.Fatal(err)
			}
			var b strings.Builder
			for _, f := range generatedFiles(spec) {
				fmt.Fprintf(&b, "==== %s %v\n%s", f.Path, f.Mode, f.Data)
			}
			got := b.String()
			golden.Check(t, filepath.Join("testdata", tc.name+".golden"), got)
		})
	}
}

func TestParseLdd(t *testing.T) {
	for _, tc := range []struct {
		name, out string
		want      []string
		err       string
	}{
		{
			name: "debian 12",
			out: "\tlinux-vdso.so.1 (0x00007ffd7a5f4000)\n" +
				"\tlibselinux.so.1 => /lib/x86_64-linux-gnu/libselinux.so.1 (0x00007f0b5b1c0000)\n" +
				"\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0b5afdf000)\n" +
				"\tlibpcre2-8.so.0 => /lib/x86_64-linux-gnu/libpcre2-8.so.0 (0x00007f0b5af45000)\n" +
				"\t/lib64/ld-linux-x86-64.so.2 (0x00007f0b5b22a000)\n",
			want: []string{
				"/lib/x86_64-linux-gnu/libselinux.so.1",
				"/lib/x86_64-linux-gnu/libc.so.6",
				"/lib/x86_64-linux-gnu/libpcre2-8.so.0",
				"/lib64/ld-linux-x86-64.so.2",
			},
		},
		{
			name: "old vdso and 32-bit gate",
			out:  "\tlinux-vdso.so.1 =>  (0x00007fff0d1fe000)\n\tlinux-gate.so.1 (0xf7f1a000)\n\tlibm.so.6 => /lib/libm.so.6 (0xf7e00000)\n\t/lib/ld-linux.so.2 (0xf7f1c000)\n",
			want: []string{"/lib/libm.so.6", "/lib/ld-linux.so.2"},
		},
		{
			name: "no load addresses",
			out:  "\tlibc.so.6 => /usr/lib/../lib/libc.so.6\n\t/lib64/ld-linux-x86-64.so.2\n",
			want: []string{"/usr/lib/libc.so.6", "/lib64/ld-linux-x86-64.so.2"},
		},
		{name: "static", out: "\tstatically linked\n"},
		{
			name: "missing",
			out:  "\tlinux-vdso.so.1 (0x00007ffd7a5f4000)\n\tlibfoo.so.1 => not found\n\tlibbar.so.2 => not found\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0b5afdf000)\n",
			err:  "libraries not found: libfoo.so.1, libbar.so.2",
		},
		{
			name: "relative",
			out:  "\tlibc.so.6 => lib/libc.so.6 (0x00007f0b5afdf000)\n",
			err:  `unexpected ldd output line "libc.so.6 => lib/libc.so.6 (0x00007f0b5afdf000)"`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseLdd(tc.out)
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("got error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("libraries (-want +got):\n%s", diff)
			}
		})
	}
}

func TestInvalidSpecs(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec Spec
		err  string
	}{
		{"size", Spec{Size: 1000}, "image size 1000: must be a positive multiple of 4096"},
		{"negative size", Spec{Size: -4096}, "image size -4096: must be a positive multiple of 4096"},
		{"hostname", Spec{Hostname: "a b"}, `host name "a b": only letters, digits, hyphens and dots are allowed`},
		{"hostname label", Spec{Hostname: "a..b"}, `host name "a..b": empty label or label starting or ending with a hyphen`},
		{"relative program", Spec{Programs: []string{"usr/bin/env"}}, `program "usr/bin/env": the path must be absolute and clean`},
		{"empty service", Spec{Services: []string{"true", " \n"}}, "service 2 is empty"},
		{"ctrlaltdel", Spec{CtrlAltDel: 7}, "unknown CtrlAltDel value 7"},
		{"relative file", Spec{Files: []File{{Path: "etc/motd"}}}, `file "etc/motd": the path must be absolute and clean`},
		{"unclean file", Spec{Files: []File{{Path: "/etc/../motd"}}}, `file "/etc/../motd": the path must be absolute and clean`},
		{"root", Spec{Files: []File{{Path: "/", Mode: fs.ModeDir}}}, `file "/": cannot replace the root directory`},
		{"newline", Spec{Files: []File{{Path: "/etc/a\nb"}}}, `file "/etc/a\nb": the path contains a NUL or newline`},
		{"twice", Spec{Files: []File{{Path: "/a"}, {Path: "/a"}}}, `file "/a" is given twice`},
		{"device", Spec{Files: []File{{Path: "/dev/x", Mode: fs.ModeDevice}}}, `file "/dev/x": unsupported type D--------- (regular files, directories and symbolic links only)`},
		{"directory data", Spec{Files: []File{{Path: "/d", Mode: fs.ModeDir, Data: []byte("x")}}}, `file "/d" is a directory with data`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Build checks before it touches anything: dst's directory
			// does not even exist.
			err := Build(context.Background(), "/nonexistent/dir/img", tc.spec)
			if err == nil || err.Error() != tc.err {
				t.Fatalf("got error %v, want %q", err, tc.err)
			}
		})
	}
}

// TestTreeConflicts: Files replace generated files and applet links, but
// not a directory that holds files, and nothing goes under a non-directory.
func TestTreeConflicts(t *testing.T) {
	tr := tree{}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(tr.addFile(File{Path: "/usr/bin/env", Mode: fs.ModeSymlink, Data: []byte("/bin/busybox")}))
	must(tr.addFile(File{Path: "/usr/bin/env", Mode: 0o755, Data: []byte("#!/bin/sh\n")}))
	if e := tr["/usr/bin/env"]; e.kind != file || e.perm != 0o755 {
		t.Errorf("/usr/bin/env is %+v, want the replacing file", e)
	}
	if e := tr["/usr"]; e == nil || e.kind != dir || e.perm != 0o755 {
		t.Errorf("the implied /usr is %+v, want a 0755 directory", e)
	}
	for _, tc := range []struct {
		f   File
		err string
	}{
		{File{Path: "/usr/bin/env/x"}, "adding file /usr/bin/env/x: /usr/bin/env is not a directory in the image"},
		{File{Path: "/usr", Mode: fs.ModeSymlink, Data: []byte("/")}, "adding file /usr: /usr is a directory in the image, and not empty"},
		{File{Path: "/link", Mode: fs.ModeSymlink}, "file /link: a symbolic link needs a target in Data"},
	} {
		if err := tr.addFile(tc.f); err == nil || err.Error() != tc.err {
			t.Errorf("adding %s: got error %v, want %q", tc.f.Path, err, tc.err)
		}
	}
	// A directory may replace a directory: only its mode changes.
	must(tr.addFile(File{Path: "/usr", Mode: fs.ModeDir | 0o700}))
	if e := tr["/usr"]; e.perm != 0o700 {
		t.Errorf("/usr has mode %v, want 0700", e.perm)
	}
}

func TestDebugfsQuoting(t *testing.T) {
	if got, want := quoteDebugfs(`/a b"c\d`), `"/a b""c\d"`; got != want {
		t.Errorf("quoteDebugfs = %s, want %s", got, want)
	}
}

// TestReproducible builds the same Spec twice, in different seconds (a
// leaked ctime would show) and into different directories, and compares the
// bytes; it checks the image with e2fsck and debugfs.
func TestReproducible(t *testing.T) {
	testbed.RequireCommands(t, "mke2fs", "debugfs", "e2fsck", "dumpe2fs", "busybox")
	t.Parallel()
	ctx := context.Background()
	// Modes, types and names the debugfs script must quote.
	oddFiles := []File{
		{Path: `/etc/odd name "quoted" \back`, Data: []byte("odd\n")},
		{Path: "/usr/local/bin/suid", Mode: fs.ModeSetuid | 0o755, Data: []byte("#!/bin/sh\nid\n")},
		{Path: "/srv/empty", Mode: fs.ModeDir | 0o750},
		{Path: "/etc/resolv.conf", Mode: fs.ModeSymlink, Data: []byte("/run/resolv.conf")},
	}
	spec := Spec{
		Size:     32 << 20,
		Hostname: "repro",
		Programs: []string{"/usr/bin/ls"},
		Files:    oddFiles,
		Startup:  "echo hello",
		Services: []string{"sleep 1000"},
		Shutdown: "echo bye",
	}
	a := filepath.Join(t.TempDir(), "a.img")
	b := filepath.Join(t.TempDir(), "b.img")
	start := time.Now()
	if err := Build(ctx, a, spec); err != nil {
		t.Fatal(err)
	}
	t.Logf("first build: %v", time.Since(start).Round(time.Millisecond))
	for time.Now().Unix() == start.Unix() {
		time.Sleep(10 * time.Millisecond)
	}
	if err := Build(ctx, b, spec); err != nil {
		t.Fatal(err)
	}
	if same, err := sameContent(a, b); err != nil {
		t.Fatal(err)
	} else if !same {
		out, _ := exec.Command("cmp", "-l", a, b).CombinedOutput()
		t.Fatalf("two builds of the same Spec differ (cmp -l):\n%.2000s", out)
	}

	if out, err := exec.Command("e2fsck", "-fn", a).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn: %v\n%s", err, out)
	}
	stat := func(p string) string {
		t.Helper()
		out, err := exec.Command("debugfs", "-R", "stat "+quoteDebugfs(p), a).CombinedOutput()
		if err != nil || strings.Contains(string(out), "File not found") {
			t.Fatalf("debugfs stat %s: %v\n%s", p, err, out)
		}
		return string(out)
	}
	for p, want := range map[string][]string{
		"/sbin/init":                  {"Type: symlink", `Fast link dest: "/bin/busybox"`},
		"/bin/busybox":                {"Type: regular", "Mode:  0755"},
		"/usr/bin/ls":                 {"Type: regular", "Mode:  0755"},
		"/lib64/ld-linux-x86-64.so.2": {"Type: regular"},
		"/dev/console":                {"Type: character special", "Mode:  0600", "Device major/minor number: 05:01"},
		"/tmp":                        {"Type: directory", "Mode:  01777"},
		"/usr/local/bin/suid":         {"Mode:  04755"},
		"/srv/empty":                  {"Type: directory", "Mode:  0750"},
		"/etc/resolv.conf":            {`Fast link dest: "/run/resolv.conf"`},
		oddFiles[0].Path:              {"Type: regular", "Mode:  0644", "Size: 4"},
	} {
		out := stat(p)
		for _, w := range append(want, "User:     0   Group:     0", "ctime: 0x65920080:00000000", "mtime: 0x65920080:00000000") {
			if !strings.Contains(out, w) {
				t.Errorf("debugfs stat %s: no %q in\n%s", p, w, out)
			}
		}
	}
	libs, err := libraries(ctx, "/usr/bin/ls")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range libs {
		stat(l)
	}

	// Rebuilding an identical image leaves dst alone, so COW files made
	// on it stay valid.
	old := time.Unix(Epoch, 0)
	if err := os.Chtimes(a, old, old); err != nil {
		t.Fatal(err)
	}
	if err := Build(ctx, a, spec); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(a); err != nil {
		t.Fatal(err)
	} else if !st.ModTime().Equal(old) {
		t.Errorf("rebuilding the same image changed its mtime to %v", st.ModTime())
	}

	// A different Spec gives a different image, with another UUID.
	spec.Startup = "echo hello again"
	if err := Build(ctx, b, spec); err != nil {
		t.Fatal(err)
	}
	if uuid(t, a) == uuid(t, b) {
		t.Errorf("two different images have the same UUID %s", uuid(t, a))
	}

	// A failed build leaves dst and its directory as they were: 1 MiB is
	// too small, mke2fs fails.
	before := uuid(t, b)
	spec.Size = 1 << 20
	if err := Build(ctx, b, spec); err == nil {
		t.Fatal("building a 1 MiB image succeeded")
	} else {
		t.Logf("building a 1 MiB image: %v", err)
	}
	if after := uuid(t, b); after != before {
		t.Errorf("a failed build changed the image's UUID from %s to %s", before, after)
	}
	entries, err := os.ReadDir(filepath.Dir(b))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("after a failed build, %s holds %v, want only b.img", filepath.Dir(b), entries)
	}
}

// TestDebugfsErrors: debugfs exits 0 when a command fails; makeFS must not.
func TestDebugfsErrors(t *testing.T) {
	testbed.RequireCommands(t, "mke2fs", "debugfs")
	image := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(image, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(image, 8<<20); err != nil {
		t.Fatal(err)
	}
	err := makeFS(context.Background(), image, t.TempDir(), 8<<20, [32]byte{}, []byte("sif /nonexistent uid 0\n"))
	if err == nil || !strings.Contains(err.Error(), "/nonexistent: File not found") {
		t.Fatalf("got error %v, want one about /nonexistent", err)
	}
}

func uuid(t *testing.T, image string) string {
	t.Helper()
	out, err := exec.Command("dumpe2fs", "-h", image).Output()
	if err != nil {
		t.Fatalf("dumpe2fs -h %s: %v", image, err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, "Filesystem UUID:"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("dumpe2fs -h %s shows no UUID:\n%s", image, out)
	return ""
}
