package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"
	"unicode"
	"unicode/utf16"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"umlsd/config"
	"umlsd/cow"
	"umlsd/internal/printable"
)

func newCowCmd(env *Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cow",
		Short: "Create, inspect and merge the guests' copy-on-write files",
		Long: `A COW file holds a guest's changes to its root image, the backing file, which
guests share. These commands work on the files directly: stop the guests that
use them first.`,
		Args: args(cobra.NoArgs),
		RunE: func(c *cobra.Command, _ []string) error {
			return exitErrorf(ExitUsage, "missing command (create, info or merge); see %s --help", c.CommandPath())
		},
	}
	cmd.AddCommand(newCowCreateCmd(env), newCowInfoCmd(env), newCowMergeCmd(env))
	return cmd
}

func newCowCreateCmd(env *Env) *cobra.Command {
	return &cobra.Command{
		Use:   "create BACKING COW",
		Short: "Create a COW file on a backing file, as uml_mkcow does",
		Args:  args(cobra.ExactArgs(2)),
		RunE: func(c *cobra.Command, a []string) error {
			if err := cow.Create(a[1], a[0]); err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "Created COW file %s on backing file %s.\n", a[1], a[0])
			return nil
		},
	}
}

// cowInfo is `cow info --json`'s object; its field names are stable.
type cowInfo struct {
	Path           string `json:"path"`
	Version        int    `json:"version"`
	BackingFile    string `json:"backing_file"`
	Size           int64  `json:"size"`
	MTime          int64  `json:"mtime"`
	SectorSize     int    `json:"sector_size"`
	Alignment      int    `json:"alignment"`
	BitmapOffset   int64  `json:"bitmap_offset"`
	BitmapLength   int64  `json:"bitmap_length"`
	DataOffset     int64  `json:"data_offset"`
	Sectors        int64  `json:"sectors"`
	DirtySectors   int64  `json:"dirty_sectors"`
	DirtyBytes     int64  `json:"dirty_bytes"`
	FileSize       int64  `json:"file_size"`
	AllocatedBytes int64  `json:"allocated_bytes"`
	BackingFound   bool   `json:"backing_found"`
	BackingSize    int64  `json:"backing_size"`
	BackingMTime   int64  `json:"backing_mtime"`
	BackingMatches bool   `json:"backing_matches"`
	BackingProblem string `json:"backing_problem"`
}

func newCowInfoCmd(env *Env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "info [--json] COW",
		Short: "Show a COW file's header, how much it holds, and whether its backing file still fits",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, a []string) error {
			in, err := cow.ReadInfo(a[0])
			if err != nil {
				return err
			}
			ci := cowInfo{
				Path: a[0], Version: in.Version, BackingFile: in.Backing, Size: in.Size, MTime: in.MTime,
				SectorSize: in.SectorSize, Alignment: in.Alignment,
				BitmapOffset: in.BitmapOffset, BitmapLength: in.BitmapLen, DataOffset: in.DataOffset,
				Sectors: in.Sectors, DirtySectors: in.DirtySectors, DirtyBytes: in.DirtyBytes,
				FileSize: in.FileSize, AllocatedBytes: in.Allocated,
				BackingFound: in.BackingFound, BackingSize: in.BackingSize, BackingMTime: in.BackingMTime,
				BackingMatches: in.BackingProblem == nil,
			}
			if in.BackingProblem != nil {
				ci.BackingProblem = in.BackingProblem.Error()
			}
			if asJSON {
				b, err := json.MarshalIndent(ci, "", "  ")
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(env.Stdout, "%s\n", jsonPrintable(b))
				return err
			}
			return writeCowInfo(env.Stdout, ci)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON object")
	return cmd
}

// jsonPrintable is the JSON text b with every character that is not
// printable in its strings escaped: encoding/json escapes control
// characters below U+0020 only, and leaves the others a guest can put in
// its COW header, such as U+009B, which some terminals take for CSI, the
// start of an escape sequence.
func jsonPrintable(b []byte) []byte {
	var out bytes.Buffer
	for _, r := range string(b) {
		switch {
		case r == '\n' || unicode.IsPrint(r):
			out.WriteRune(r)
		case r > 0xffff:
			r1, r2 := utf16.EncodeRune(r)
			fmt.Fprintf(&out, `\u%04x\u%04x`, r1, r2)
		default:
			fmt.Fprintf(&out, `\u%04x`, r)
		}
	}
	return out.Bytes()
}

func writeCowInfo(w io.Writer, ci cowInfo) error {
	align := "-"
	if ci.Alignment != 0 {
		align = fmt.Sprint(ci.Alignment)
	}
	backingSize, backingMTime, matches := "-", "-", "yes"
	if ci.BackingFound {
		backingSize, backingMTime = bytesText(ci.BackingSize), cow.FormatMTime(ci.BackingMTime)
	}
	if !ci.BackingMatches {
		matches = "no: " + ci.BackingProblem
	}
	lines := [][2]string{
		{"COW file", ci.Path},
		{"Version", fmt.Sprint(ci.Version)},
		{"Backing file", ci.BackingFile},
		{"Stored size", bytesText(ci.Size)},
		{"Stored mtime", cow.FormatMTime(ci.MTime)},
		{"Sector size", fmt.Sprint(ci.SectorSize)},
		{"Alignment", align},
		{"Bitmap offset", fmt.Sprint(ci.BitmapOffset)},
		{"Bitmap length", fmt.Sprint(ci.BitmapLength)},
		{"Data offset", fmt.Sprint(ci.DataOffset)},
		{"Sectors", fmt.Sprint(ci.Sectors)},
		{"Dirty sectors", fmt.Sprint(ci.DirtySectors)},
		{"Dirty bytes", bytesText(ci.DirtyBytes)},
		{"File size", bytesText(ci.FileSize)},
		{"Allocated", bytesText(ci.AllocatedBytes)},
		{"Backing found", yesNo(ci.BackingFound)},
		{"Backing size", backingSize},
		{"Backing mtime", backingMTime},
		{"Backing matches", matches},
	}
	var b strings.Builder
	for _, l := range lines {
		// The backing file's path is the guest's to write, in the header.
		fmt.Fprintf(&b, "%-16s %s\n", l[0]+":", printable.Line(l[1]))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// bytesText is n bytes, exactly and, from 1 KiB on, roughly in binary
// units.
func bytesText(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d bytes", n)
	}
	return fmt.Sprintf("%d bytes (%s)", n, humanBytes(uint64(n)))
}

// humanBytes is n roughly, in binary units.
func humanBytes(n uint64) string {
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v, u := float64(n)/1024, 0
	for v >= 1024 && u < len(units)-1 {
		v, u = v/1024, u+1
	}
	return fmt.Sprintf("%.1f %s", v, units[u])
}

func newCowMergeCmd(env *Env) *cobra.Command {
	var (
		opt     cow.MergeOptions
		inPlace bool
		yes     bool
	)
	cmd := &cobra.Command{
		Use:   "merge [--backing PATH] COW NEW | --in-place [--yes] [--backing PATH] COW",
		Short: "Merge a COW file and its backing file into a new image, or into the backing file",
		Long: `merge writes the image a guest sees, its backing file with the COW file's
changes over it, to the new file NEW, as uml_moo does, but never over an
existing file and never half-written. With --in-place it writes the changes
into the backing file itself, as uml_moo -d does: that invalidates every other
COW file on that backing file, so it asks first unless --yes is given.
--backing names the backing file when the header's path is wrong, as for a COW
file made in a jail. The guests must be stopped.`,
		Args: args(func(c *cobra.Command, a []string) error {
			if inPlace {
				return cobra.ExactArgs(1)(c, a)
			}
			return cobra.ExactArgs(2)(c, a)
		}),
		RunE: func(c *cobra.Command, a []string) error {
			if yes && !inPlace {
				return exitErrorf(ExitUsage, "--yes is for --in-place only; see %s --help", c.CommandPath())
			}
			if inPlace {
				return mergeInPlace(c, env, a[0], opt, yes)
			}
			start := time.Now()
			if err := cow.Merge(c.Context(), a[0], a[1], opt); err != nil {
				return withGuests(env, err)
			}
			fmt.Fprintf(env.Stdout, "Merged %s into %s%s in %.2f s.\n", a[0], a[1], dirtyText(a[0]), time.Since(start).Seconds())
			fmt.Fprintf(env.Stdout, "%s is readable by root only, as it may hold the guest's private data; make it readable by the account of the guest that will use it (chmod 0644 %s if it holds nothing secret).\n", a[1], a[1])
			return nil
		},
	}
	cmd.Flags().StringVar(&opt.Backing, "backing", "", "the backing file, instead of the one the COW file's header names")
	cmd.Flags().BoolVar(&inPlace, "in-place", false, "merge into the backing file (invalidates every other COW file on it)")
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation of --in-place")
	return cmd
}

func mergeInPlace(c *cobra.Command, env *Env, cowPath string, opt cow.MergeOptions, yes bool) error {
	h, err := cow.Read(cowPath)
	if err != nil {
		return err
	}
	backing := h.Backing
	if opt.Backing != "" {
		backing = opt.Backing
	}
	guests, err := guestsWith(env, func(g *config.Guest) bool { return cow.SameFile(g.RootImage, backing) })
	if err != nil {
		return err
	}
	if opt.Backing == "" {
		// The guest wrote the header: write only into a file the
		// configuration names, the one the merge opens.
		notRoot := fmt.Errorf("COW file %s names backing file %s, which no guest in %s uses as RootImage=; a COW file can be forged by its guest, so umlctl does not write into a file it names; give the backing file explicitly with --backing if you mean it",
			cowPath, printable.Line(backing), env.ConfigDir)
		if len(guests) == 0 {
			return notRoot
		}
		opt.BackingWritable = func(fi fs.FileInfo) error {
			names, err := guestsWith(env, func(g *config.Guest) bool {
				gfi, err := os.Stat(g.RootImage)
				return err == nil && os.SameFile(gfi, fi)
			})
			if err != nil {
				return err
			}
			if len(names) == 0 {
				return notRoot
			}
			return nil
		}
	}
	shown := printable.Line(backing)
	fmt.Fprintf(env.Stderr, "Warning: merging %s into %s in place changes %s: every other COW file on it becomes invalid, and the guests using them will not boot.\n",
		cowPath, shown, shown)
	if len(guests) == 0 {
		fmt.Fprintf(env.Stderr, "No guest configured in %s has RootImage=%s.\n", env.ConfigDir, shown)
	} else {
		fmt.Fprintf(env.Stderr, "Guests with RootImage=%s: %s.\n", shown, strings.Join(guests, ", "))
	}
	if !yes {
		ok, err := confirm(env, "Merge in place? [y/N] ")
		if err != nil {
			return err
		}
		if !ok {
			return errors.New("merge in place not confirmed; nothing changed")
		}
	}
	start := time.Now()
	if err := cow.MergeInPlace(c.Context(), cowPath, opt); err != nil {
		return withGuests(env, err)
	}
	fmt.Fprintf(env.Stdout, "Merged %s into %s%s in %.2f s. Every COW file on %s, this one included, is now invalid.\n",
		cowPath, shown, dirtyText(cowPath), time.Since(start).Seconds(), shown)
	return nil
}

// dirtyText says how much a merged COW file held, after the merge: before
// it, the backing file is to be checked first, as the header's claims
// decide how much there is to read.
func dirtyText(cowPath string) string {
	in, err := cow.ReadInfo(cowPath)
	if err != nil {
		return ""
	}
	return fmt.Sprintf(": %d sectors, %s, from the COW file,", in.DirtySectors, bytesText(in.DirtyBytes))
}

// confirm asks the question on stderr and reads the answer from stdin,
// which must be a terminal.
func confirm(env *Env, question string) (bool, error) {
	f, ok := env.Stdin.(*os.File)
	if !ok || !isTerminal(f) {
		return false, exitErrorf(ExitUsage, "standard input is not a terminal to confirm the merge in place on; pass --yes to confirm it")
	}
	fmt.Fprint(env.Stderr, question)
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return false, fmt.Errorf("reading the confirmation: %w", err)
	}
	answer := strings.ToLower(strings.TrimSpace(line))
	return answer == "y" || answer == "yes", nil
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// guestsWith names the configured guests for which match is true, valid
// ones and those whose only problem is a conflict with another.
func guestsWith(env *Env, match func(*config.Guest) bool) ([]string, error) {
	set, err := env.loader().LoadAll()
	if err != nil {
		return nil, fmt.Errorf("loading the guests' configurations: %w", err)
	}
	var names []string
	for _, g := range set.Guests {
		if match(g) {
			names = append(names, g.Name)
		}
	}
	for _, f := range set.Failed {
		if f.Guest != nil && match(f.Guest) {
			names = append(names, f.Name)
		}
	}
	return names, nil
}

// withGuests adds the configured guests that use a file in use to the
// error, with the command that stops them.
func withGuests(env *Env, err error) error {
	var inUse *cow.InUseError
	if !errors.As(err, &inUse) {
		return err
	}
	names, lerr := guestsWith(env, func(g *config.Guest) bool {
		if inUse.Role == "COW file" {
			return cow.SameFile(g.Cow, inUse.Path)
		}
		return cow.SameFile(g.RootImage, inUse.Path)
	})
	if lerr != nil || len(names) == 0 {
		return err
	}
	stops := make([]string, len(names))
	for i, n := range names {
		stops[i] = "umlctl stop " + n
	}
	return fmt.Errorf("%w; guests configured with it: %s (%s)", err, strings.Join(names, ", "), strings.Join(stops, "; "))
}
