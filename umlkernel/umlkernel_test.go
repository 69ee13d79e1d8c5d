package umlkernel

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"umlsd/internal/testbed"
)

// fakeKernel is a file laid out as a kernel binary holds its banner and
// configuration: NUL-terminated strings among others.
func fakeKernel(t *testing.T, strs ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "linux")
	data := "\x7fELF\x00junk\x00" + strings.Join(strs, "\x00") + "\x00more junk\x00"
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

var header = []string{"#\n", "# Automatically generated file; DO NOT EDIT.\n", "# Linux/um 6.1.192 Kernel Configuration\n", "#\n"}

func TestRelease(t *testing.T) {
	tests := []struct {
		name    string
		strs    []string
		release string
		wantErr string
	}{
		{
			name: "kernel",
			strs: append([]string{"Linux version %s", "Linux version 6.1.192-umlsd (umlsd@umlsd) (gcc) #1 Thu Nov 26 17:12:00 UTC 2026\n"},
				append(header, "CONFIG_MODULES=y\n", "# CONFIG_HOSTFS is not set\n")...),
			release: "6.1.192-umlsd",
		},
		{
			name:    "not a kernel",
			strs:    []string{"hello"},
			wantErr: "it has no Linux version banner: it is not a Linux kernel",
		},
		{
			name:    "no configuration",
			strs:    []string{"Linux version 6.1.0 (x@y)"},
			wantErr: "it has no User-Mode Linux build configuration: it is not a User-Mode Linux kernel",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			release, err := Release(fakeKernel(t, tt.strs...))
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("Release: got error %v, want %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if release != tt.release {
				t.Errorf("Release = %q, want %q", release, tt.release)
			}
		})
	}
}

// TestRealKernels reads Debian's kernel and umlsd's as they are, and
// compares what it finds with what each prints when asked.
func TestRealKernels(t *testing.T) {
	for _, tt := range []struct {
		name string
		path func(testing.TB) string
	}{
		{"debian", debianKernel},
		{"umlsd", testbed.ProjectKernel},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := tt.path(t)
			release, err := Release(path)
			if err != nil {
				t.Fatal(err)
			}
			version, err := exec.Command(path, "--version").Output()
			if err != nil {
				t.Fatalf("%s --version: %v", path, err)
			}
			if want := strings.TrimSpace(string(version)); release != want {
				t.Errorf("Release = %q; %s --version says %q", release, path, want)
			}
		})
	}
}

// debianKernel is Debian's linux.uml.
func debianKernel(t testing.TB) string {
	testbed.RequireCommands(t, "linux.uml")
	path, err := exec.LookPath("linux.uml")
	if err != nil {
		t.Fatal(err)
	}
	return path
}
