package jail

import (
	"os"
	"slices"
	"testing"

	"umlsd/internal/testbed"
)

func TestProgramFilesOfTheUMLKernel(t *testing.T) {
	const kernel = "/usr/bin/linux.uml"
	testbed.RequireCommands(t, "linux.uml")
	got, err := ProgramFiles(kernel)
	if err != nil {
		t.Fatal(err)
	}
	// uml-facts.md: the kernel needs libc and the loader, nothing else.
	want := []string{kernel, "/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/libc.so.6"}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("ProgramFiles(%s) = %q, want %q", kernel, got, want)
	}
}

func TestProgramFilesOfAStaticProgram(t *testing.T) {
	const busybox = "/bin/busybox"
	testbed.RequireCommands(t, "busybox")
	got, err := ProgramFiles(busybox)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []string{busybox}) {
		t.Errorf("ProgramFiles(%s) = %q, want only itself", busybox, got)
	}
}

func TestProgramFilesOfANonELF(t *testing.T) {
	p := t.TempDir() + "/script"
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := ProgramFiles(p); err == nil {
		t.Error("ProgramFiles of a shell script: no error")
	}
}
