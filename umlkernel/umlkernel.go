// Package umlkernel reads what a User-Mode Linux kernel binary says about
// itself: its release and the configuration it was built with. It reads
// the file and runs nothing, so that checks may use it as freely as they
// read a configuration.
//
// Every UML kernel carries both as text. The release is in the boot banner
// ("Linux version 6.1.192-umlsd (…"), and the configuration is the one that
// `linux --showconfig` prints: arch/um/kernel/config.c holds it as one
// string per line, which the linker keeps in order (it may merge lines that
// other strings repeat, such as blank ones and "#").
package umlkernel

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
)

// Info is what a kernel binary says about itself.
type Info struct {
	// Release is the kernel's release, as uname -r shows it in the guest.
	Release string
	// options are the configuration's settings by name, without CONFIG_:
	// "y", a number or a quoted string; a "# CONFIG_X is not set" line
	// is "n".
	options map[string]string
}

// maxSize bounds what is read: UML kernels are 5–15 MB.
const maxSize = 256 << 20

var (
	bannerPrefix = []byte("Linux version ")
	configHeader = []byte("\x00# Automatically generated file; DO NOT EDIT.\n\x00# Linux/um ")
	// A line of the configuration, as config.c holds it.
	configLine = regexp.MustCompile(`^(?:CONFIG_([A-Za-z0-9_]+)=(.*)|# CONFIG_([A-Za-z0-9_]+) is not set|#.*|)\n$`)
)

// Inspect reads the kernel binary at path. Its errors other than the
// file's (fs.PathError) say what the file lacks, without its name.
func Inspect(path string) (*Info, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSize))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	release, err := release(b)
	if err != nil {
		return nil, err
	}
	options, err := options(b)
	if err != nil {
		return nil, err
	}
	return &Info{Release: release, options: options}, nil
}

// release finds the banner and takes the release from it.
func release(b []byte) (string, error) {
	for rest := b; ; {
		i := bytes.Index(rest, bannerPrefix)
		if i < 0 {
			return "", errors.New("it has no Linux version banner: it is not a Linux kernel")
		}
		rest = rest[i+len(bannerPrefix):]
		end := bytes.IndexAny(rest, " \x00")
		if end > 0 && rest[0] >= '0' && rest[0] <= '9' {
			return string(rest[:end]), nil
		}
	}
}

// options reads the configuration's strings, from its header on, for as
// long as they are lines of a configuration.
func options(b []byte) (map[string]string, error) {
	i := bytes.Index(b, configHeader)
	if i < 0 {
		return nil, errors.New("it has no User-Mode Linux build configuration: it is not a User-Mode Linux kernel")
	}
	opts := map[string]string{}
	for rest := b[i+1:]; ; {
		end := bytes.IndexByte(rest, 0)
		if end < 0 {
			break
		}
		m := configLine.FindSubmatch(rest[:end])
		if m == nil {
			break
		}
		rest = rest[end+1:]
		switch {
		case m[1] != nil:
			opts[string(m[1])] = string(m[2])
		case m[3] != nil:
			opts[string(m[3])] = "n"
		}
	}
	return opts, nil
}

// Option is the value of configuration option name (without CONFIG_):
// "y", a number or a quoted string as the configuration writes it, and "n"
// for an option that is not set or that this kernel does not have.
func (k *Info) Option(name string) string {
	if v, ok := k.options[strings.TrimPrefix(name, "CONFIG_")]; ok {
		return v
	}
	return "n"
}

// Has says whether option name is built in.
func (k *Info) Has(name string) bool { return k.Option(name) == "y" }

// Lines are the configuration's settings, one CONFIG_NAME=VALUE each for
// the options that are set, sorted by name: what `linux --showconfig`
// prints without its comments.
func (k *Info) Lines() []string {
	lines := make([]string, 0, len(k.options))
	for name, v := range k.options {
		if v != "n" {
			lines = append(lines, "CONFIG_"+name+"="+v)
		}
	}
	slices.Sort(lines)
	return lines
}
