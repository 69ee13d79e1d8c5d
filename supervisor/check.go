package supervisor

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"umlsd/config"
	"umlsd/netprep"
)

// Severity says how a Finding bears on a guest's start.
type Severity string

const (
	// Problem: the start would fail, or the finding must be fixed first.
	Problem Severity = "problem"
	// Note: what the start will do by itself, or a state worth knowing.
	Note Severity = "note"
	// Skipped: a check that could not be made, and why.
	Skipped Severity = "skipped"
	// Info: what the start will use, such as the kernel's release.
	Info Severity = "info"
)

// Finding is one thing Check found, as one sentence that says what to do.
type Finding struct {
	Severity Severity
	Message  string
}

// Checker checks the host for guests' starts without changing anything:
// umlctl check. NewChecker makes one for the host.
type Checker struct {
	accounts accounts
	lookup   netprep.Lookup
	procSys  string
	modprobe []string
	unitOf   func(pid int) string
	root     bool
}

// NewChecker is a Checker of the host it runs on.
func NewChecker() *Checker {
	return &Checker{
		accounts: hostAccounts{},
		lookup:   lookupHost,
		procSys:  "/proc/sys",
		modprobe: []string{"modprobe"},
		unitOf:   unitOfProcess,
		root:     os.Geteuid() == 0,
	}
}

// Check runs the supervisor's preflight of guest g without changing
// anything, and returns every problem it finds, not just the first, with
// notes on what the start will change (the default account, the COW file,
// br_netfilter). others are the other configured guests. Checks that need
// root to read a file are reported Skipped when it does not run as root.
// It looks at the network namespace of the calling OS thread.
func (c *Checker) Check(ctx context.Context, g *config.Guest, others []*config.Guest) []Finding {
	in := &inspection{
		g: g, others: others, db: c.accounts, lookup: c.lookup,
		procSys: c.procSys, modprobe: c.modprobe, unitOf: c.unitOf,
		dryRun: true,
	}
	for _, step := range in.steps() {
		err := step(ctx)
		switch {
		case err == nil:
		case !c.root && errors.Is(err, fs.ErrPermission):
			in.findings = append(in.findings, Finding{Severity: Skipped, Message: err.Error() + "; not checked further, because umlctl check does not run as root"})
		default:
			in.findings = append(in.findings, Finding{Severity: Problem, Message: err.Error()})
		}
	}
	return in.findings
}

// unitOfProcess is the systemd unit (service or scope) process pid runs
// in, from its control group; "" if none is known.
func unitOfProcess(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return ""
	}
	return unitOfCgroup(string(b))
}

// unitOfCgroup finds the unit in the text of /proc/PID/cgroup: the
// innermost .service or .scope of its path ("0::/system.slice/uml@dns.service").
func unitOfCgroup(text string) string {
	for _, line := range strings.Split(text, "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 || parts[1] != "" && parts[1] != "name=systemd" {
			continue
		}
		elems := strings.Split(parts[2], "/")
		for i := len(elems) - 1; i >= 0; i-- {
			if strings.HasSuffix(elems[i], ".service") || strings.HasSuffix(elems[i], ".scope") {
				return elems[i]
			}
		}
	}
	return ""
}
