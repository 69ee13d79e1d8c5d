package guestimage

import (
	"context"
	"debug/elf"
	"fmt"
	"path"
	"strings"
)

// libraries returns the shared libraries a host program needs, the dynamic
// loader included, as the absolute paths the loader opens them by; none for
// a static program.
//
// debug/elf only tells whether the program is dynamically linked (it has a
// PT_INTERP), so static programs never run through ldd. The libraries come
// from ldd, that is from the loader itself: it resolves the whole closure as
// it will at run time (ld.so.cache, RPATH and RUNPATH, $ORIGIN, glibc-hwcaps
// subdirectories), which reading DT_NEEDED entries would have to imitate.
// ldd runs the loader on the program, so Programs must be trusted host
// programs. The guest has no ld.so.cache: a library found only through
// /etc/ld.so.conf, outside the loader's default directories, is copied but
// not found at run time.
func libraries(ctx context.Context, program string) ([]string, error) {
	dyn, err := isDynamic(program)
	if err != nil {
		return nil, err
	}
	if !dyn {
		return nil, nil
	}
	out, err := run(ctx, "ldd", program)
	if err != nil {
		return nil, fmt.Errorf("listing the libraries of %s: %w", program, err)
	}
	libs, err := parseLdd(string(out))
	if err != nil {
		return nil, fmt.Errorf("listing the libraries of %s: %w", program, err)
	}
	return libs, nil
}

// isDynamic reports whether an ELF file asks for a dynamic loader.
func isDynamic(name string) (bool, error) {
	f, err := elf.Open(name)
	if err != nil {
		return false, fmt.Errorf("%s is not an ELF executable: %w", name, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return true, nil
		}
	}
	return false, nil
}

// parseLdd extracts the library paths from the output of ldd for one
// program. Its lines are
//
//	linux-vdso.so.1 (0x00007ffc...)                        in the kernel: skipped
//	libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)   a library
//	/lib64/ld-linux-x86-64.so.2 (0x...)                    the loader
//	libfoo.so.1 => not found                               an error
//	statically linked                                      no libraries
func parseLdd(out string) ([]string, error) {
	var libs, missing []string
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line == "statically linked" {
			continue
		}
		name, rest, arrow := strings.Cut(line, " => ")
		if !arrow {
			rest = name
		}
		rest = strings.TrimSpace(rest)
		if rest == "not found" {
			missing = append(missing, name)
			continue
		}
		// Drop the load address.
		if i := strings.LastIndex(rest, " (0x"); i >= 0 && strings.HasSuffix(rest, ")") {
			rest = rest[:i]
		} else if strings.HasPrefix(rest, "(0x") {
			rest = ""
		}
		switch {
		case rest == "":
			// linux-vdso.so.1 => (0x...) in old versions.
		case path.IsAbs(rest):
			libs = append(libs, path.Clean(rest))
		case !arrow && !strings.Contains(rest, "/"):
			// linux-vdso.so.1, linux-gate.so.1: provided by the kernel.
		default:
			return nil, fmt.Errorf("unexpected ldd output line %q", line)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("libraries not found: %s", strings.Join(missing, ", "))
	}
	return libs, nil
}
