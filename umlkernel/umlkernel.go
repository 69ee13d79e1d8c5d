// Package umlkernel reads which User-Mode Linux kernel a binary is: its
// release. It reads the file and runs nothing, so that checks may use it as
// freely as they read a configuration.
//
// Every UML kernel carries what this needs as text: the release is in
// the boot banner ("Linux version 6.1.192-umlsd (…"), and the configuration
// that `linux --showconfig` prints (arch/um/kernel/config.c), whose header
// tells a UML kernel from any other program or kernel.
package umlkernel

import (
	"bytes"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

var (
	bannerPrefix = []byte("Linux version ")
	configHeader = []byte("\x00# Automatically generated file; DO NOT EDIT.\n\x00# Linux/um ")
)

// Release reads the release of the UML kernel binary at path. Its errors
// other than the file's (fs.PathError) say what the file lacks, without
// its name.
func Release(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	if fi.Size() == 0 || !fi.Mode().IsRegular() {
		return "", errors.New("it is not a Linux kernel: it is empty or not a regular file")
	}
	// Mapped, not read: the file is 5–15 MB and most of it is not looked at.
	b, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	defer unix.Munmap(b)
	return release(b)
}

// release finds the banner and takes the release from it, in a file that
// holds a UML kernel's configuration.
func release(b []byte) (string, error) {
	for rest := b; ; {
		i := bytes.Index(rest, bannerPrefix)
		if i < 0 {
			return "", errors.New("it has no Linux version banner: it is not a Linux kernel")
		}
		rest = rest[i+len(bannerPrefix):]
		end := bytes.IndexAny(rest, " \x00")
		if end <= 0 || rest[0] < '0' || rest[0] > '9' {
			continue
		}
		if !bytes.Contains(b, configHeader) {
			return "", errors.New("it has no User-Mode Linux build configuration: it is not a User-Mode Linux kernel")
		}
		return string(rest[:end]), nil
	}
}
