package generator

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
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
	out, err := openOutDir(dir)
	if err != nil {
		return err
	}
	defer out.close()

	// The .wants/ and .requires/ directories are shared between guests.
	var linkDirs []string
	for _, g := range set.Guests {
		for _, u := range g.WantedBy {
			linkDirs = append(linkDirs, u+".wants")
		}
		for _, u := range g.RequiredBy {
			linkDirs = append(linkDirs, u+".requires")
		}
	}
	slices.Sort(linkDirs)
	for _, d := range slices.Compact(linkDirs) {
		if err := out.mkdir(d); err != nil {
			return err
		}
	}

	// This runs at every boot and daemon-reload: write on every core.
	errs := make([]error, len(set.Guests))
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(runtime.GOMAXPROCS(0), len(set.Guests)) {
		wg.Go(func() {
			for i := range next {
				errs[i] = writeGuest(out, set.Guests[i], gen.Options)
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

func writeGuest(out *outDir, g *config.Guest, opts Options) error {
	if err := out.mkdir(g.UnitName() + ".d"); err != nil {
		return err
	}
	for _, f := range Render(g, opts) {
		if err := out.write(f); err != nil {
			return err
		}
	}
	return nil
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
