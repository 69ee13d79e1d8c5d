package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/vishvananda/netlink"

	"umlsd/config"
	"umlsd/internal/printable"
	"umlsd/netprep"
	"umlsd/supervisor"
)

// kernelInfo is what a running guest's supervisor and kernel say of it.
type kernelInfo struct {
	PID     int     `json:"pid"`
	Version string  `json:"version,omitempty"`        // mconsole version
	Uptime  float64 `json:"uptime_seconds,omitempty"` // /proc/uptime's
	Boots   int     `json:"boots"`                    // 1 + reboots
	Ready   bool    `json:"ready"`
	Frozen  bool    `json:"frozen"`
	// FrozenUnknown: a freeze or thaw did not complete; Frozen is then
	// true, to be safe.
	FrozenUnknown bool `json:"frozen_unknown,omitempty"`
	// Problem is why a supervisor that runs could not be asked; nothing
	// else is known then.
	Problem string `json:"problem,omitempty"`
}

// errNotRunning is Env.Kernel's error for a guest without a supervisor.
var errNotRunning = errors.New("the guest is not running")

// traffic is a guest's packet and drop counters.
type traffic struct {
	// From and To the guest, as its tap counts them.
	FromPackets uint64 `json:"from_guest_packets"`
	FromBytes   uint64 `json:"from_guest_bytes"`
	ToPackets   uint64 `json:"to_guest_packets"`
	ToBytes     uint64 `json:"to_guest_bytes"`
	// Spoofed and Policy are what its firewall dropped (netprep.Drops).
	Spoofed uint64 `json:"spoofed_drops"`
	Policy  uint64 `json:"policy_drops"`
}

// statusReport is umlctl status; its JSON form is the --json output's.
type statusReport struct {
	Name        string      `json:"name"`
	Description string      `json:"description,omitempty"`
	Config      string      `json:"config"`
	Unit        string      `json:"unit"`
	State       string      `json:"state"`
	SubState    string      `json:"sub_state"`
	ReadySince  *time.Time  `json:"ready_since"`
	StatusText  string      `json:"status_text,omitempty"`
	Result      string      `json:"result,omitempty"`
	Memory      uint64      `json:"memory_bytes"`
	RootImage   string      `json:"root_image"`
	Cow         string      `json:"cow,omitempty"`
	Network     *netSummary `json:"network,omitempty"`
	KernelFile  kernelFile  `json:"kernel_file"`
	Kernel      *kernelInfo `json:"kernel"`
	Traffic     *traffic    `json:"traffic,omitempty"`
	Console     []string    `json:"console"`
	// Problems are what could not be read, one sentence each.
	Problems []string `json:"problems,omitempty"`
}

// kernelFile is the kernel binary the guest boots (Kernel=).
type kernelFile struct {
	Path    string `json:"path"`
	Release string `json:"release,omitempty"`
	// Problem is why the release could not be read.
	Problem string `json:"problem,omitempty"`
}

type netSummary struct {
	Bridge    string   `json:"bridge"`
	Tap       string   `json:"tap"`
	MAC       string   `json:"mac"`
	Addresses []string `json:"addresses"`
}

func newStatusCmd(env *Env) *cobra.Command {
	var asJSON bool
	var lines int
	cmd := &cobra.Command{
		Use:   "status NAME",
		Short: "Show a guest's configuration, state, kernel, counters and console",
		Long: `Show a guest's configuration summary, its unit's state, its kernel's version and
uptime (from the management console), its packet and firewall drop counters,
and its last console lines. Exits 3 if the guest is not running.`,
		Args:              args(cobra.ExactArgs(1)),
		ValidArgsFunction: completeGuests(env),
		RunE: func(c *cobra.Command, a []string) error {
			g, err := loadGuest(env, a[0])
			if err != nil {
				return err
			}
			r, err := guestStatus(c.Context(), env, g, lines)
			if err != nil {
				return err
			}
			if asJSON {
				err = writeJSON(env.Stdout, r)
			} else {
				printStatus(env.Stdout, r, env.Now())
			}
			if err == nil && r.Kernel == nil {
				// As systemctl status: scripts may test for a running guest.
				return &ExitError{Status: ExitNotRunning, Err: errSilent}
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON, for scripts")
	cmd.Flags().IntVarP(&lines, "lines", "n", 10, "how many console lines to show")
	return cmd
}

// errSilent is an error whose exit status says everything: Run prints
// nothing for it.
var errSilent = errors.New("")

func guestStatus(ctx context.Context, env *Env, g *config.Guest, lines int) (*statusReport, error) {
	r := &statusReport{
		Name: g.Name, Description: g.Description, Config: g.Path, Unit: g.UnitName(),
		Memory: g.Memory, RootImage: g.RootImage, Cow: g.Cow, Console: []string{},
		KernelFile: kernelFile{Path: g.Kernel},
	}
	if rel, err := env.KernelRelease(g.Kernel); err != nil {
		r.KernelFile.Problem = err.Error()
	} else {
		r.KernelFile.Release = printable.Line(rel)
	}
	if n := g.Network; n != nil {
		r.Network = &netSummary{Bridge: n.Bridge, Tap: n.Tap, MAC: n.MAC.String(), Addresses: []string{}}
		for _, a := range n.Addresses {
			r.Network.Addresses = append(r.Network.Addresses, a.String())
		}
	}
	err := withSystemd(ctx, env, func(sd systemd) error {
		u, err := sd.Unit(ctx, g.UnitName())
		if err != nil {
			return err
		}
		// The status text quotes the guest (its STATUS= lines).
		r.State, r.SubState, r.StatusText, r.Result = u.ActiveState, u.SubState, printable.Line(u.StatusText), u.Result
		if !u.ActiveSince.IsZero() {
			t := u.ActiveSince
			r.ReadySince = &t
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	k, err := env.Kernel(ctx, g.Name)
	switch {
	case errors.Is(err, errNotRunning):
	case err != nil:
		r.Kernel = &kernelInfo{Problem: printable.Line(err.Error())}
	default:
		k.Version = printable.Line(k.Version) // the guest's kernel's answer
		r.Kernel = &k
	}
	if r.Kernel != nil && g.Network != nil {
		t, err := env.Traffic(ctx, g)
		if err != nil {
			r.Problems = append(r.Problems, err.Error())
		} else {
			r.Traffic = &t
		}
	}
	if lines > 0 {
		if r.Console, err = env.ConsoleLog(ctx, g.Name, lines); err != nil {
			r.Problems = append(r.Problems, printable.Line(err.Error()))
			r.Console = []string{}
		}
		// Console lines are the guest's: outside its console, escape
		// sequences in them must not reach the terminal.
		for i, l := range r.Console {
			r.Console[i] = printable.Line(l)
		}
	}
	return r, nil
}

func printStatus(w io.Writer, r *statusReport, now time.Time) {
	dot := "○"
	if r.Kernel != nil {
		dot = "●"
	}
	title := r.Name
	if r.Description != "" {
		title += " - " + r.Description
	}
	fmt.Fprintf(w, "%s %s\n", dot, title)
	row := func(key, format string, args ...any) {
		fmt.Fprintf(w, "%11s: %s\n", key, fmt.Sprintf(format, args...))
	}
	row("Config", "%s", r.Config)
	state := unitState{ActiveState: r.State, SubState: r.SubState}.State()
	if r.ReadySince != nil {
		state += ", ready since " + formatSince(*r.ReadySince, now)
	} else if r.State == "failed" && r.Result != "" {
		state += " (result: " + r.Result + ")"
	}
	row("Unit", "%s: %s", r.Unit, state)
	if r.StatusText != "" {
		row("Status", "%s", r.StatusText)
	}
	if f := r.KernelFile; f.Problem != "" {
		row("Kernel", "%s (%s)", f.Path, f.Problem)
	} else {
		row("Kernel", "%s, Linux %s", f.Path, f.Release)
	}
	switch k := r.Kernel; {
	case k == nil:
		row("Process", "not running")
	case k.Problem != "":
		row("Process", "unknown: %s", k.Problem)
	default:
		var s []string
		switch {
		case k.FrozenUnknown:
			s = append(s, fmt.Sprintf("perhaps FROZEN (a freeze or thaw did not complete; umlctl thaw %s settles it)", r.Name))
		case k.Frozen:
			s = append(s, fmt.Sprintf("FROZEN (umlctl thaw %s resumes it)", r.Name))
		}
		s = append(s, fmt.Sprintf("pid %d", k.PID))
		if k.Uptime > 0 {
			s = append(s, "up "+formatDuration(time.Duration(k.Uptime*float64(time.Second))))
		}
		switch k.Boots {
		case 0, 1:
		case 2:
			s = append(s, "rebooted once")
		default:
			s = append(s, fmt.Sprintf("rebooted %d times", k.Boots-1))
		}
		if k.Version != "" {
			s = append(s, k.Version)
		}
		row("Process", "%s", strings.Join(s, ", "))
	}
	row("Memory", "%s", config.FormatSize(r.Memory))
	if r.Cow != "" {
		row("Root", "%s over %s", r.Cow, r.RootImage)
	} else {
		row("Root", "%s (written directly: Cow=no)", r.RootImage)
	}
	if n := r.Network; n != nil {
		row("Network", "%s on %s, MAC %s, %s", n.Tap, n.Bridge, n.MAC, dash(strings.Join(n.Addresses, " ")))
	}
	if t := r.Traffic; t != nil {
		row("Traffic", "from the guest %d packets (%s), to the guest %d packets (%s)",
			t.FromPackets, humanBytes(t.FromBytes), t.ToPackets, humanBytes(t.ToBytes))
		row("Dropped", "%d spoofed (not the guest's address, MAC or protocol), %d by the firewall policy", t.Spoofed, t.Policy)
	}
	for _, p := range r.Problems {
		row("Problem", "%s", p)
	}
	if len(r.Console) > 0 {
		fmt.Fprintf(w, "\nLast console lines (journalctl -u %s for more):\n", r.Unit)
		for _, l := range r.Console {
			fmt.Fprintf(w, "  %s\n", l)
		}
	}
}

func formatDuration(d time.Duration) string {
	d = d.Truncate(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dmin %ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh %dmin", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%d days %dh", int(d.Hours()/24), int(d.Hours())%24)
}

// hostTraffic reads a running guest's counters: its tap's through netlink,
// its firewall's drops through iptables.
func hostTraffic(ctx context.Context, g *config.Guest) (traffic, error) {
	var t traffic
	link, err := netlink.LinkByName(g.Network.Tap)
	if err != nil {
		return t, fmt.Errorf("reading the counters of tap %s: %w", g.Network.Tap, err)
	}
	if s := link.Attrs().Statistics; s != nil {
		// The host receives what the guest sends.
		t.FromPackets, t.FromBytes = s.RxPackets, s.RxBytes
		t.ToPackets, t.ToBytes = s.TxPackets, s.TxBytes
	}
	d, err := netprep.NewFirewall().Drops(ctx, g.Name)
	if err != nil {
		return t, fmt.Errorf("reading the firewall's drop counters: %w", err)
	}
	t.Spoofed, t.Policy = d.Spoofed, d.Policy
	return t, nil
}

// journalConsole is the guest's last n console lines, from the journal,
// where its supervisor logs them under the identifier uml@NAME.
func journalConsole(ctx context.Context, name string, n int) ([]string, error) {
	cmd := exec.CommandContext(ctx, "journalctl", "--no-pager", "--quiet", "--output=cat", "--lines", fmt.Sprint(n),
		supervisor.GuestField+"="+name, "SYSLOG_IDENTIFIER=uml@"+name)
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, strings.TrimSpace(string(ee.Stderr)))
		}
		return nil, fmt.Errorf("reading the console lines from the journal: %w", err)
	}
	text := strings.TrimRight(string(out), "\n")
	if text == "" {
		return []string{}, nil
	}
	return strings.Split(text, "\n"), nil
}
