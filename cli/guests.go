package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"umlsd/config"
)

// completeGuests completes guest names from the configuration directory.
func completeGuests(env *Env) cobra.CompletionFunc {
	return func(_ *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		paths, _ := filepath.Glob(filepath.Join(env.ConfigDir, "*.conf"))
		var names []cobra.Completion
		for _, p := range paths {
			if name := strings.TrimSuffix(filepath.Base(p), ".conf"); config.ValidName(name) {
				names = append(names, name)
			}
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	}
}

// withSystemd runs f with a connection to systemd.
func withSystemd(ctx context.Context, env *Env, f func(systemd) error) error {
	sd, err := env.Systemd(ctx)
	if err != nil {
		return err
	}
	defer sd.Close()
	return f(sd)
}

// listEntry is one guest in umlctl list; its JSON form is the --json
// output's.
type listEntry struct {
	Name       string     `json:"name"`
	Config     string     `json:"config"`
	State      string     `json:"state"`     // the unit's ActiveState, or "broken"
	SubState   string     `json:"sub_state"` // the unit's SubState
	ReadySince *time.Time `json:"ready_since"`
	Addresses  []string   `json:"addresses"`
	Bridge     string     `json:"bridge,omitempty"`
	Tap        string     `json:"tap,omitempty"`
	Memory     uint64     `json:"memory_bytes,omitempty"`
	Error      string     `json:"error,omitempty"` // why a broken configuration is
}

func newListCmd(env *Env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List every configured guest and its state",
		Long: `List every guest configured in the configuration directory, running or not,
with its unit's state, since when it is ready, its addresses, tap and memory.
Guests whose configuration has errors are listed as broken, with the error.`,
		Args: args(cobra.NoArgs),
		RunE: func(c *cobra.Command, _ []string) error { return runList(c.Context(), env, asJSON) },
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON, for scripts")
	return cmd
}

func runList(ctx context.Context, env *Env, asJSON bool) error {
	entries, err := listGuests(ctx, env)
	if err != nil {
		return err
	}
	if asJSON {
		return writeJSON(env.Stdout, entries)
	}
	printList(env.Stdout, entries, env.Now())
	return nil
}

func listGuests(ctx context.Context, env *Env) ([]listEntry, error) {
	set, err := env.loader().LoadAll()
	if err != nil {
		return nil, err
	}
	entries := make([]listEntry, 0, len(set.Guests)+len(set.Failed))
	err = withSystemd(ctx, env, func(sd systemd) error {
		for _, g := range set.Guests {
			u, err := sd.Unit(ctx, g.UnitName())
			if err != nil {
				return err
			}
			entries = append(entries, guestEntry(g, u))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, f := range set.Failed {
		entries = append(entries, listEntry{
			Name: f.Name, Config: f.Path, State: "broken", Addresses: []string{}, Error: f.Err.Error(),
		})
	}
	// Valid and failed guests each come sorted: merge them by name.
	slices.SortFunc(entries, func(a, b listEntry) int { return strings.Compare(a.Name, b.Name) })
	return entries, nil
}

func guestEntry(g *config.Guest, u unitState) listEntry {
	e := listEntry{
		Name: g.Name, Config: g.Path, State: u.ActiveState, SubState: u.SubState,
		Addresses: []string{}, Memory: g.Memory,
	}
	if !u.ActiveSince.IsZero() {
		t := u.ActiveSince
		e.ReadySince = &t
	}
	if n := g.Network; n != nil {
		e.Bridge, e.Tap = n.Bridge, n.Tap
		for _, a := range n.Addresses {
			e.Addresses = append(e.Addresses, a.String())
		}
	}
	return e
}

func printList(w io.Writer, entries []listEntry, now time.Time) {
	if len(entries) == 0 {
		fmt.Fprintln(w, "No guests configured.")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tREADY SINCE\tADDRESSES\tTAP\tMEMORY")
	var broken []listEntry
	for _, e := range entries {
		state := unitState{ActiveState: e.State, SubState: e.SubState}.State()
		since := "-"
		if e.ReadySince != nil {
			since = formatSince(*e.ReadySince, now)
		}
		addrs, tap, mem := dash(strings.Join(e.Addresses, ",")), dash(e.Tap), "-"
		if e.Memory != 0 {
			mem = config.FormatSize(e.Memory)
		}
		if e.State == "broken" {
			broken = append(broken, e)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.Name, state, since, addrs, tap, mem)
	}
	tw.Flush()
	fmt.Fprintf(w, "\n%d guests listed.\n", len(entries))
	for _, e := range broken {
		fmt.Fprintf(w, "%s is broken: %s\n", e.Name, e.Error)
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// formatSince is a time as systemctl shows it, with how long ago.
func formatSince(t, now time.Time) string {
	return t.Format("2006-01-02 15:04:05 MST") + "; " + formatDuration(now.Sub(t)) + " ago"
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// newJobCmd is start, stop or restart: a systemd job on the guest's unit,
// waited for.
func newJobCmd(env *Env, verb, short string) *cobra.Command {
	var noBlock bool
	cmd := &cobra.Command{
		Use:               verb + " NAME",
		Short:             short,
		Args:              args(cobra.ExactArgs(1)),
		ValidArgsFunction: completeGuests(env),
		RunE: func(c *cobra.Command, a []string) error {
			g, err := loadGuest(env, a[0])
			if err != nil {
				return err
			}
			return withSystemd(c.Context(), env, func(sd systemd) error {
				return runJob(c.Context(), sd, verb, g, noBlock)
			})
		},
	}
	cmd.Flags().BoolVar(&noBlock, "no-block", false, "do not wait for the guest to be ready or stopped")
	return cmd
}

func runJob(ctx context.Context, sd systemd, verb string, g *config.Guest, noBlock bool) error {
	unit := g.UnitName()
	if verb != "stop" {
		u, err := sd.Unit(ctx, unit)
		if err != nil {
			return err
		}
		if u.NeedDaemonReload {
			return fmt.Errorf("the configuration of %s changed since systemd read it; run systemctl daemon-reload first", g.Name)
		}
	}
	result, err := sd.Job(ctx, verb, unit, !noBlock)
	if err != nil || noBlock || result == "done" {
		return err
	}
	// Explain with what the supervisor said last.
	u, err := sd.Unit(ctx, unit)
	if err != nil {
		return fmt.Errorf("%s of guest %s ended with %q; see systemctl status %s", verb, g.Name, result, unit)
	}
	why := strings.TrimPrefix(u.StatusText, "failed: ")
	if why == "" {
		why = fmt.Sprintf("the unit's result is %s", u.Result)
		if u.Result == "exit-code" {
			why += fmt.Sprintf(" (exit status %d)", u.ExecMainStatus)
		}
	}
	return fmt.Errorf("%s of guest %s failed: %s; see journalctl -u %s", verb, g.Name, why, unit)
}
