package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"umlsd/config"
	"umlsd/generator"
	"umlsd/supervisor"
)

// GuestChecker preflights the host for a guest without changing anything:
// supervisor.Checker on a host.
type GuestChecker interface {
	Check(ctx context.Context, g *config.Guest, others []*config.Guest) []supervisor.Finding
}

func newCheckCmd(env *Env) *cobra.Command {
	var units, asJSON bool
	cmd := &cobra.Command{
		Use:   "check [NAME...]",
		Short: "Check guest configurations and the host, changing nothing",
		Long: `check validates the configurations of the guests NAME (of every guest without
a NAME) as the generator does, and checks the host as each guest's start would:
the kernel, the images and COW files, the bridge, br_netfilter and the account.
It changes nothing: what a start would change (create the account or the COW
file, load br_netfilter) is a note. Each problem is one line that says what to
do; the exit status is 1 if there is any.

Some files only root may read: run as another user, check says which checks it
skipped.`,
		Args: args(cobra.ArbitraryArgs),
		RunE: func(c *cobra.Command, names []string) error {
			if units && asJSON {
				return exitErrorf(ExitUsage, "--units and --json do not go together: the JSON output has no units; see %s --help", c.CommandPath())
			}
			return runCheck(c.Context(), env, names, units, asJSON)
		},
	}
	cmd.Flags().BoolVar(&units, "units", false, "also print the units the generator would write for each guest")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the findings as a JSON array of {guest, severity, message}")
	return cmd
}

// checkFinding is one line of check's report; Guest is empty for what is
// about the configuration directory.
type checkFinding struct {
	Guest    string              `json:"guest"`
	Severity supervisor.Severity `json:"severity"`
	Message  string              `json:"message"`
}

func runCheck(ctx context.Context, env *Env, names []string, units, asJSON bool) error {
	set, err := env.loader().LoadAll()
	if err != nil {
		return err
	}
	guests, failed, err := selectGuests(env.ConfigDir, set, names)
	if err != nil {
		return err
	}
	var findings []checkFinding
	add := func(guest string, sev supervisor.Severity, msg string) {
		findings = append(findings, checkFinding{Guest: guest, Severity: sev, Message: msg})
	}
	if len(names) == 0 {
		for _, w := range set.Warnings {
			add("", supervisor.Note, w)
		}
	}
	// Guests in name order, whether they failed or not.
	var order []string
	for _, g := range guests {
		order = append(order, g.Name)
	}
	for _, f := range failed {
		order = append(order, f.Name)
	}
	slices.Sort(order)
	checker := env.Checker
	if checker == nil {
		checker = supervisor.NewChecker()
	}
	for _, name := range order {
		if i := slices.IndexFunc(failed, func(f *config.Failure) bool { return f.Name == name }); i >= 0 {
			// One line per error: each names its file and line.
			for _, line := range strings.Split(failed[i].Err.Error(), "\n") {
				add(name, supervisor.Problem, line)
			}
			continue
		}
		g := guests[slices.IndexFunc(guests, func(g *config.Guest) bool { return g.Name == name })]
		for _, f := range checker.Check(ctx, g, set.Guests) {
			add(name, f.Severity, f.Message)
		}
	}

	if asJSON {
		if findings == nil {
			findings = []checkFinding{} // [], not null
		}
		b, err := json.MarshalIndent(findings, "", "  ")
		if err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "%s\n", b)
	} else {
		if units {
			for _, g := range guests {
				generator.Print(env.Stdout, generator.Render(g, env.Units))
			}
		}
		for _, f := range findings {
			printFinding(env.Stdout, f)
		}
		fmt.Fprintln(env.Stdout, summary(env.ConfigDir, len(order), findings))
	}
	if n := count(findings, supervisor.Problem); n > 0 {
		return exitErrorf(ExitFailure, "found %s; each line says what to do, then run umlctl check again", plural(n, "problem"))
	}
	return nil
}

// selectGuests finds the guests names asks for, every guest without names.
// A name without a configuration is an error of its own exit status.
func selectGuests(dir string, set *config.Set, names []string) ([]*config.Guest, []*config.Failure, error) {
	if len(names) == 0 {
		return set.Guests, set.Failed, nil
	}
	var guests []*config.Guest
	var failed []*config.Failure
	for _, name := range names {
		if !config.ValidName(name) {
			_, err := config.Loader{Dir: dir}.Load(name) // says what a name is
			return nil, nil, &ExitError{Status: ExitNoGuest, Err: err}
		}
		if i := slices.IndexFunc(set.Guests, func(g *config.Guest) bool { return g.Name == name }); i >= 0 {
			if !slices.Contains(guests, set.Guests[i]) {
				guests = append(guests, set.Guests[i])
			}
			continue
		}
		if i := slices.IndexFunc(set.Failed, func(f *config.Failure) bool { return f.Name == name }); i >= 0 {
			if !slices.Contains(failed, set.Failed[i]) {
				failed = append(failed, set.Failed[i])
			}
			continue
		}
		known := "there is no guest configured"
		if all := guestNames(set); len(all) > 0 {
			known = "the configured guests are " + strings.Join(all, ", ")
		}
		return nil, nil, exitErrorf(ExitNoGuest, "there is no guest %s: %s does not exist (%s)", name, filepath.Join(dir, name+".conf"), known)
	}
	return guests, failed, nil
}

func guestNames(set *config.Set) []string {
	var names []string
	for _, g := range set.Guests {
		names = append(names, g.Name)
	}
	for _, f := range set.Failed {
		names = append(names, f.Name)
	}
	slices.Sort(names)
	return names
}

// printFinding writes one line: problems plain, like a compiler's errors,
// the others marked.
func printFinding(w io.Writer, f checkFinding) {
	var b strings.Builder
	if f.Guest != "" {
		b.WriteString(f.Guest + ": ")
	}
	if f.Severity != supervisor.Problem {
		b.WriteString(string(f.Severity) + ": ")
	}
	b.WriteString(f.Message)
	fmt.Fprintln(w, b.String())
}

// summary is the report's last line: "2 guests checked: 1 problem, 3 notes".
func summary(dir string, guests int, findings []checkFinding) string {
	if guests == 0 && len(findings) == 0 {
		return "no guest is configured in " + dir
	}
	counts := []string{"no problems"}
	if n := count(findings, supervisor.Problem); n > 0 {
		counts[0] = plural(n, "problem")
	}
	if n := count(findings, supervisor.Note); n > 0 {
		counts = append(counts, plural(n, "note"))
	}
	if n := count(findings, supervisor.Skipped); n > 0 {
		counts = append(counts, plural(n, "check")+" skipped (run as root for every check)")
	}
	return fmt.Sprintf("%s checked: %s", plural(guests, "guest"), strings.Join(counts, ", "))
}

func count(findings []checkFinding, sev supervisor.Severity) int {
	n := 0
	for _, f := range findings {
		if f.Severity == sev {
			n++
		}
	}
	return n
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}
