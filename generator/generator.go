package generator

import (
	"errors"
	"fmt"
	"io"
	"path"
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
	out, err := openOutDir(dir)
	if err != nil {
		return err
	}
	defer out.close()
	// Each guest is written as soon as it is parsed, while the other core
	// parses the next: this runs at every boot and daemon-reload.
	w := &writer{out: out, opts: gen.Options, linkDirs: map[string]bool{}}
	set, err := gen.Loader.LoadAllFunc(w.guest)
	if err != nil {
		return err
	}
	gen.report(set)
	for _, f := range set.Failed {
		if f.Guest != nil { // written, then found to conflict with another
			w.remove(f.Guest)
		}
	}
	if err := w.err(); err != nil {
		return err
	}
	return gen.result(set)
}

// DryRun prints what Run would write, relative to the output directory.
func (gen Generator) DryRun(w io.Writer) error {
	set, err := gen.Loader.LoadAll()
	if err != nil {
		return err
	}
	gen.report(set)
	for _, g := range set.Guests {
		Print(w, Render(g, gen.Options))
	}
	return gen.result(set)
}

// Print writes files for a reader: each file's path as a comment, then its
// contents; a link as "# PATH -> TARGET".
func Print(w io.Writer, files []File) {
	for _, f := range files {
		if f.Link != "" {
			fmt.Fprintf(w, "# %s -> %s\n", f.Path, f.Link)
			continue
		}
		fmt.Fprintf(w, "# %s\n%s\n", f.Path, f.Data)
	}
}

// report logs what was ignored and what failed.
func (gen Generator) report(set *config.Set) {
	for _, w := range set.Warnings {
		gen.Log.Warning(w)
	}
	for _, f := range set.Failed {
		gen.Log.Error(f.Err.Error())
		gen.Log.Error(fmt.Sprintf("%s: no unit generated for uml@%s.service; fix the errors above and run systemctl daemon-reload", f.Path, f.Name))
	}
}

func (gen Generator) result(set *config.Set) error {
	gen.Log.Debug(fmt.Sprintf("%s: %d guests generated, %d failed", gen.Loader.Dir, len(set.Guests), len(set.Failed)))
	if len(set.Failed) > 0 {
		return ErrFailed
	}
	return nil
}

// writer writes guests' units from several goroutines at once.
type writer struct {
	out  *outDir
	opts Options

	mu       sync.Mutex
	linkDirs map[string]bool // .wants/ and .requires/ made so far
	errs     []error
}

func (w *writer) guest(g *config.Guest) { w.fail(w.write(g)) }

func (w *writer) write(g *config.Guest) error {
	dropIns := g.UnitName() + ".d"
	if err := w.out.mkdir(dropIns); err != nil {
		return err
	}
	for _, f := range Render(g, w.opts) {
		if dir := path.Dir(f.Path); dir != dropIns {
			if err := w.linkDir(dir); err != nil {
				return err
			}
		}
		if err := w.out.write(f); err != nil {
			return err
		}
	}
	return nil
}

// linkDir makes a directory that several guests link into, once.
func (w *writer) linkDir(dir string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.linkDirs[dir] {
		return nil
	}
	if err := w.out.mkdir(dir); err != nil {
		return err
	}
	w.linkDirs[dir] = true
	return nil
}

// remove undoes write, leaving no empty directory behind.
func (w *writer) remove(g *config.Guest) {
	dropIns := g.UnitName() + ".d"
	for _, f := range Render(g, w.opts) {
		w.fail(w.out.remove(f.Path, false))
		if dir := path.Dir(f.Path); dir != dropIns {
			w.out.removeIfEmpty(dir)
		}
	}
	w.fail(w.out.remove(dropIns, true))
}

func (w *writer) fail(err error) {
	if err != nil {
		w.mu.Lock()
		w.errs = append(w.errs, err)
		w.mu.Unlock()
	}
}

// err returns the write errors, in a stable order.
func (w *writer) err() error {
	slices.SortFunc(w.errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return errors.Join(w.errs...)
}
