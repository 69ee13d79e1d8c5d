package generator

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"umlsd/config"
	"umlsd/internal/golden"
)

const template = "/lib/systemd/system/uml@.service"

// TestGolden runs the generator on each directory of testdata (a stand-in
// for /etc/uml) and compares the whole outcome — status, log and output
// tree — with testdata/NAME.golden.
func TestGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"dns", Options{Template: template}},
		{"minimal", Options{Template: template}},
		{"full", Options{Template: template}},
		{"broken", Options{Template: template}},
		{"collision", Options{Template: template}},
		{"injection", Options{Template: template}},
		{"container", Options{Template: template, InContainer: true}},
		{"empty", Options{Template: template}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			confDir := copyConfigs(t, filepath.Join("testdata", tc.name))
			out := t.TempDir()
			var log bytes.Buffer
			gen := Generator{
				Loader:  config.Loader{Dir: confDir, Owner: uint32(os.Getuid())},
				Options: tc.opts,
				Log:     NewLogger("uml-generator", 1, LevelDebug, nil, &log),
			}
			err := gen.Run(out)
			if err != nil && !errors.Is(err, ErrFailed) {
				t.Fatalf("Run: %v", err)
			}
			got := describe(t, err, log.String(), out)
			got = strings.ReplaceAll(got, confDir, "/etc/uml")

			// A second run into the same directory changes nothing.
			log.Reset()
			err = gen.Run(out)
			again := strings.ReplaceAll(describe(t, err, log.String(), out), confDir, "/etc/uml")
			if diff := cmp.Diff(got, again); diff != "" {
				t.Errorf("second run differs (-first +second):\n%s", diff)
			}

			// --dry-run shows the same files without writing any.
			var dry bytes.Buffer
			log.Reset()
			if err := gen.DryRun(&dry); err != nil && !errors.Is(err, ErrFailed) {
				t.Fatalf("DryRun: %v", err)
			}
			for _, f := range tree(t, out) {
				if !strings.HasSuffix(f, "/") && !strings.Contains(dry.String(), "# "+f) {
					t.Errorf("dry run does not show %s:\n%s", f, dry.String())
				}
			}

			golden.Check(t, filepath.Join("testdata", tc.name+".golden"), got)
		})
	}
}

func TestMissingConfigDirIsNotAnError(t *testing.T) {
	var log bytes.Buffer
	gen := Generator{
		Loader:  config.Loader{Dir: filepath.Join(t.TempDir(), "absent")},
		Options: Options{Template: template},
		Log:     NewLogger("uml-generator", 1, LevelDebug, nil, &log),
	}
	out := t.TempDir()
	if err := gen.Run(out); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if files := tree(t, out); len(files) != 0 {
		t.Errorf("wrote %v, want nothing", files)
	}
}

// TestRefusesUntrustedDirectory: a configuration directory others can
// write to decides nothing.
func TestRefusesUntrustedDirectory(t *testing.T) {
	dir := copyConfigs(t, "testdata/minimal")
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	gen := Generator{
		Loader: config.Loader{Dir: dir, Owner: uint32(os.Getuid())},
		Log:    NewLogger("uml-generator", 1, LevelDebug, nil, &log),
	}
	out := t.TempDir()
	err := gen.Run(out)
	if err == nil || !strings.Contains(err.Error(), "writable by group or others") {
		t.Errorf("Run = %v, want a refusal of the writable directory", err)
	}
	if files := tree(t, out); len(files) != 0 {
		t.Errorf("wrote %v, want nothing", files)
	}
}

// TestNeverBlocks: a FIFO where a configuration should be would block a
// plain open at boot; it is refused instead.
func TestNeverBlocks(t *testing.T) {
	dir := copyConfigs(t, "testdata/minimal")
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo.conf"), 0o644); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	gen := Generator{
		Loader:  config.Loader{Dir: dir, Owner: uint32(os.Getuid())},
		Options: Options{Template: template},
		Log:     NewLogger("uml-generator", 1, LevelDebug, nil, &log),
	}
	done := make(chan error, 1)
	go func() { done <- gen.Run(t.TempDir()) }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrFailed) || !strings.Contains(log.String(), "fifo.conf: is not a regular file") {
			t.Errorf("Run = %v; log:\n%s\nwant the FIFO refused", err, log.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the generator blocked on a FIFO")
	}
}

// copyConfigs copies a testdata directory into a private one with the
// modes a trusted /etc/uml has (git keeps no modes).
func copyConfigs(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "uml")
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if d.Name() == ".keep" {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// describe renders a generator run as text: its status, its log and every
// file it wrote.
func describe(t *testing.T, err error, log, out string) string {
	t.Helper()
	var b strings.Builder
	status := "success"
	if err != nil {
		status = "failure: " + err.Error()
	}
	b.WriteString("# status: " + status + "\n# log:\n" + log)
	for _, f := range tree(t, out) {
		if strings.HasSuffix(f, "/") {
			b.WriteString("# " + f + "\n")
			continue
		}
		p := filepath.Join(out, f)
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			target, err := os.Readlink(p)
			if err != nil {
				t.Fatal(err)
			}
			b.WriteString("# " + f + " -> " + target + "\n")
			continue
		}
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString("# " + f + " (" + fi.Mode().String() + ")\n" + string(data))
	}
	return b.String()
}

// tree lists the directories, files and links below dir, sorted;
// directories end in a slash.
func tree(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if d.IsDir() {
			rel += "/"
		}
		files = append(files, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}
