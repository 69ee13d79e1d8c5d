package jail

import (
	"debug/elf"
	"fmt"
	"os"
	"path/filepath"
	"slices"
)

// libraryDirs are the directories the dynamic loader searches when it has no
// ld.so.cache, as in a jail: Debian's multiarch directories, then the
// classic ones.
var libraryDirs = []string{
	"/lib/x86_64-linux-gnu",
	"/usr/lib/x86_64-linux-gnu",
	"/lib64",
	"/usr/lib64",
	"/lib",
	"/usr/lib",
}

// ProgramFiles lists the files the program at path needs to run in a jail:
// the program, its ELF interpreter and every shared library it needs,
// directly or through another library, each named by the path the loader
// will look it up at. It reads ELF headers only; it runs nothing.
func ProgramFiles(path string) ([]string, error) {
	files := []string{path}
	interp := ""
	for i := 0; i < len(files); i++ {
		f, err := elf.Open(files[i])
		if err != nil {
			return nil, fmt.Errorf("reading the ELF header of %s: %w", files[i], err)
		}
		if i == 0 {
			if interp, err = interpreter(f); err != nil {
				f.Close()
				return nil, fmt.Errorf("reading the interpreter of %s: %w", path, err)
			}
			if interp != "" {
				files = append(files, interp)
			}
		}
		needs, err := libraries(f, files[i], filepath.Base(interp))
		f.Close()
		if err != nil {
			return nil, err
		}
		for _, n := range needs {
			if !slices.Contains(files, n) {
				files = append(files, n)
			}
		}
	}
	return files, nil
}

// interpreter is the program's ELF interpreter, "" for a static program.
func interpreter(f *elf.File) (string, error) {
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		b := make([]byte, p.Filesz)
		if _, err := p.ReadAt(b, 0); err != nil {
			return "", err
		}
		return string(trimNUL(b)), nil
	}
	return "", nil
}

// libraries are the DT_NEEDED libraries of f (at path), resolved, except
// the interpreter, which the loader already is.
func libraries(f *elf.File, path, interp string) ([]string, error) {
	libs, err := f.ImportedLibraries()
	if err != nil {
		return nil, fmt.Errorf("reading the libraries %s needs: %w", path, err)
	}
	runpath, _ := f.DynString(elf.DT_RUNPATH)
	rpath, _ := f.DynString(elf.DT_RPATH)
	var needs []string
	for _, lib := range libs {
		if lib == interp {
			continue
		}
		p, err := findLibrary(lib, append(splitPaths(rpath, runpath), libraryDirs...))
		if err != nil {
			return nil, fmt.Errorf("finding %s, which %s needs: %w", lib, path, err)
		}
		needs = append(needs, p)
	}
	return needs, nil
}

func findLibrary(name string, dirs []string) (string, error) {
	if filepath.IsAbs(name) {
		return name, nil
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", fmt.Errorf("not found in %v", dirs)
}

// splitPaths splits DT_RPATH and DT_RUNPATH values. $ORIGIN and the other
// dynamic string tokens are not expanded: a path that uses them is not
// found, which is reported.
func splitPaths(values ...[]string) []string {
	var dirs []string
	for _, v := range values {
		for _, s := range v {
			dirs = append(dirs, filepath.SplitList(s)...)
		}
	}
	return dirs
}

func trimNUL(b []byte) []byte {
	for len(b) > 0 && b[len(b)-1] == 0 {
		b = b[:len(b)-1]
	}
	return b
}
