package umlkernel

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

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

func TestInspect(t *testing.T) {
	tests := []struct {
		name    string
		strs    []string
		release string
		lines   []string
		wantErr string
	}{
		{
			name: "kernel",
			strs: append(append([]string{"Linux version %s", "Linux version 6.1.192-umlsd (umlsd@umlsd) (gcc) #1 Thu Nov 26 17:12:00 UTC 2026\n"}, header...),
				"CONFIG_MODULES=y\n", "# CONFIG_HOSTFS is not set\n", "\n", "# General setup\n",
				`CONFIG_LOCALVERSION="-umlsd"`+"\n", "CONFIG_LOG_BUF_SHIFT=14\n", "CONFIG_IPV6=m\n",
				// Not the configuration's any more: the next object's strings.
				"CONFIG_AFTER=y", "CONFIG_TOO_LATE=y\n"),
			release: "6.1.192-umlsd",
			lines:   []string{`CONFIG_IPV6=m`, `CONFIG_LOCALVERSION="-umlsd"`, "CONFIG_LOG_BUF_SHIFT=14", "CONFIG_MODULES=y"},
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
			path := fakeKernel(t, tt.strs...)
			k, err := Inspect(path)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("Inspect: got error %v, want %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if k.Release != tt.release {
				t.Errorf("Release = %q, want %q", k.Release, tt.release)
			}
			if diff := cmp.Diff(tt.lines, k.Lines()); diff != "" {
				t.Errorf("Lines (-want +got):\n%s", diff)
			}
		})
	}
}

func TestOption(t *testing.T) {
	k, err := Inspect(fakeKernel(t, append(append([]string{"Linux version 6.1.192 x"}, header...),
		"CONFIG_MODULES=y\n", "# CONFIG_HOSTFS is not set\n", "CONFIG_IPV6=m\n")...))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, want string
		has        bool
	}{
		{"MODULES", "y", true},
		{"CONFIG_MODULES", "y", true},
		{"HOSTFS", "n", false},
		{"IPV6", "m", false},
		{"NO_SUCH_OPTION", "n", false},
	} {
		if got := k.Option(tt.name); got != tt.want {
			t.Errorf("Option(%s) = %q, want %q", tt.name, got, tt.want)
		}
		if got := k.Has(tt.name); got != tt.has {
			t.Errorf("Has(%s) = %v, want %v", tt.name, got, tt.has)
		}
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
			k, err := Inspect(path)
			if err != nil {
				t.Fatal(err)
			}
			version, err := exec.Command(path, "--version").Output()
			if err != nil {
				t.Fatalf("%s --version: %v", path, err)
			}
			if want := strings.TrimSpace(string(version)); k.Release != want {
				t.Errorf("Release = %q; %s --version says %q", k.Release, path, want)
			}
			out, err := exec.Command(path, "--showconfig").Output()
			if err != nil {
				t.Fatalf("%s --showconfig: %v", path, err)
			}
			var want []string
			for _, l := range strings.Split(string(out), "\n") {
				if strings.HasPrefix(l, "CONFIG_") {
					want = append(want, l)
				}
			}
			slices.Sort(want)
			if diff := cmp.Diff(want, k.Lines()); diff != "" {
				t.Errorf("Lines differ from --showconfig (-showconfig +Inspect):\n%s", diff)
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
