package generator

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"runtime"
	"strings"
	"sync"

	"umlsd/config"
)

// ErrFailed is returned when any guest could not be generated; every other
// guest was generated all the same.
var ErrFailed = errors.New("some guest configurations have errors; their units were not generated")

// Generator renders every guest of a configuration directory.
type Generator struct {
	Loader  config.Loader
	Options Options
	Log     *Logger
}

// Run writes the units into dir, which systemd passes as the generator's
// "normal" directory. Nothing is written outside it.
func (gen Generator) Run(dir string) error {
	set, err := gen.load()
	if err != nil {
		return err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("opening the output directory: %w", err)
	}
	defer root.Close()

	// This runs at every boot and daemon-reload: write on every core.
	errs := make([]error, len(set.Guests))
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(runtime.GOMAXPROCS(0), len(set.Guests)) {
		wg.Go(func() {
			for i := range next {
				for _, f := range Render(set.Guests[i], gen.Options) {
					if err := writeFile(root, f); err != nil {
						errs[i] = fmt.Errorf("writing %s: %w", path.Join(dir, f.Path), err)
						break
					}
				}
			}
		})
	}
	for i := range set.Guests {
		next <- i
	}
	close(next)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return gen.result(set)
}

// DryRun prints what Run would write, relative to the output directory.
func (gen Generator) DryRun(w io.Writer) error {
	set, err := gen.load()
	if err != nil {
		return err
	}
	for _, g := range set.Guests {
		for _, f := range Render(g, gen.Options) {
			if f.Link != "" {
				fmt.Fprintf(w, "# %s -> %s\n", f.Path, f.Link)
				continue
			}
			fmt.Fprintf(w, "# %s\n%s\n", f.Path, f.Data)
		}
	}
	return gen.result(set)
}

func (gen Generator) load() (*config.Set, error) {
	set, err := gen.Loader.LoadAll()
	if err != nil {
		return nil, err
	}
	for _, w := range set.Warnings {
		gen.Log.Warning(w)
	}
	for _, f := range set.Failed {
		for _, line := range strings.Split(f.Err.Error(), "\n") {
			gen.Log.Error(line)
		}
		gen.Log.Error(fmt.Sprintf("%s: no unit generated for uml@%s.service; fix the errors above and run systemctl daemon-reload", f.Path, f.Name))
	}
	return set, nil
}

func (gen Generator) result(set *config.Set) error {
	gen.Log.Debug(fmt.Sprintf("%s: %d guests generated, %d failed", gen.Loader.Dir, len(set.Guests), len(set.Failed)))
	if len(set.Failed) > 0 {
		return ErrFailed
	}
	return nil
}

// writeFile writes one generated file below root. Running the generator
// again into the same directory rewrites its files.
func writeFile(root *os.Root, f File) error {
	if err := root.Mkdir(path.Dir(f.Path), 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	if f.Link == "" {
		return root.WriteFile(f.Path, f.Data, 0o644)
	}
	err := root.Symlink(f.Link, f.Path)
	if errors.Is(err, fs.ErrExist) {
		if target, rerr := root.Readlink(f.Path); rerr == nil && target == f.Link {
			return nil
		}
		if err = root.Remove(f.Path); err == nil {
			err = root.Symlink(f.Link, f.Path)
		}
	}
	return err
}
