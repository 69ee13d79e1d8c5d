package netprep

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
)

// tables is one family's netfilter tables, read and changed in the format
// of iptables-save and iptables-restore: one command reads them all, and
// one transaction per table changes them, so that a guest's firewall is
// never half-installed and a start runs a few commands, not one per rule.
// An interface so that the tests can use a fake.
//
// Both start their command and return; the function they return waits for
// its result. The three families' commands so run at once, and are all
// started by the calling thread, in its network namespace.
type tables interface {
	Save(ctx context.Context) func() (string, error)
	// Restore changes what script names and nothing else (--noflush).
	Restore(ctx context.Context, script string) func() error
}

// Firewall applies and removes guests' rule sets. Supervisors of several
// guests may use it at once: the tools serialise their transactions, and no
// two guests share a chain or a rule.
type Firewall struct {
	v4, v6, bridge tables
}

// NewFirewall drives the host's iptables, ip6tables and ebtables (the
// nf_tables ones on Debian, all from its iptables package).
func NewFirewall() *Firewall {
	return &Firewall{
		v4:     tool{"iptables-save", "iptables-restore", "-w", "--noflush"},
		v6:     tool{"ip6tables-save", "ip6tables-restore", "-w", "--noflush"},
		bridge: tool{"ebtables-save", "ebtables-restore", "--noflush"},
	}
}

func (fw *Firewall) of(f Family) tables {
	switch f {
	case IPv4:
		return fw.v4
	case IPv6:
		return fw.v6
	}
	return fw.bridge
}

var families = []Family{IPv4, IPv6, Bridge}

// Apply installs rule set rs of guest name, replacing whatever the guest
// had: per table, in one transaction, the guest's old jumps and chains go,
// its chains are made and filled, and then jumped to. The tap must not exist
// yet (see OpenTap): the guest is fenced before its first packet. Applying
// the same rule set again changes nothing.
func (fw *Firewall) Apply(ctx context.Context, name string, rs RuleSet) error {
	return fw.change(ctx, Base(name), rs)
}

// Teardown removes everything guest name owns, found by name: the rules of
// built-in chains that jump to its chains, and the chains. It touches
// nothing else, and does nothing when nothing is left.
func (fw *Firewall) Teardown(ctx context.Context, name string) error {
	return fw.change(ctx, Base(name), nil)
}

// change makes every family's tables hold exactly rs's for the guest of
// base. A family that fails does not keep the others from changing.
func (fw *Firewall) change(ctx context.Context, base string, rs RuleSet) error {
	saves := make([]func() (string, error), len(families))
	for i, f := range families {
		saves[i] = fw.of(f).Save(ctx)
	}
	var errs []error
	restores := make([]func() error, len(families))
	for i, f := range families {
		saved, err := saves[i]()
		if err != nil {
			errs = append(errs, fmt.Errorf("reading the %s tables: %w", f, err))
			continue
		}
		if script := restoreScript(f, parseSaved(saved), base, rs); script != "" {
			restores[i] = fw.of(f).Restore(ctx, script)
		}
	}
	for i, f := range families {
		if restores[i] == nil {
			continue
		}
		if err := restores[i](); err != nil {
			errs = append(errs, fmt.Errorf("changing the %s tables of %s: %w", f, base, err))
		}
	}
	return errors.Join(errs...)
}

// saved is a family's tables as save prints them: per table, its chains
// and its rules ("-A CHAIN …"), in order.
type saved []savedTable

type savedTable struct {
	name   string
	chains []string
	rules  []string
}

func parseSaved(text string) saved {
	var s saved
	for _, line := range strings.Split(text, "\n") {
		switch {
		case strings.HasPrefix(line, "*"):
			s = append(s, savedTable{name: line[1:]})
		case len(s) == 0:
		case strings.HasPrefix(line, ":"):
			name, _, _ := strings.Cut(line[1:], " ")
			s[len(s)-1].chains = append(s[len(s)-1].chains, name)
		case strings.HasPrefix(line, "-A "):
			s[len(s)-1].rules = append(s[len(s)-1].rules, line)
		}
	}
	return s
}

func (s saved) table(name string) savedTable {
	for _, t := range s {
		if t.name == name {
			return t
		}
	}
	return savedTable{name: name}
}

// restoreScript is the restore input that takes family f's tables from
// what was saved to holding exactly rs's chains and jumps for the guest
// of base; "" when there is nothing to change. Everything of the guest is
// found by name: its chains are base plus a known suffix, its jumps the
// rules of other chains that target one.
func restoreScript(f Family, s saved, base string, rs RuleSet) string {
	var sb strings.Builder
	for _, tc := range chainsOf {
		if tc.family != f {
			continue
		}
		st := s.table(tc.table)
		var want *Table
		for i := range rs {
			if rs[i].Family == f && rs[i].Name == tc.table {
				want = &rs[i]
			}
		}
		ours := func(chain string) bool {
			rest, ok := strings.CutPrefix(chain, base)
			return ok && slices.Contains(tc.suffixes, rest)
		}
		var lines []string
		for _, r := range st.rules {
			chain, _, _ := strings.Cut(strings.TrimPrefix(r, "-A "), " ")
			if tokens, err := splitRule(r); err == nil && ours(target(tokens)) && !ours(chain) {
				lines = append(lines, "-D"+strings.TrimPrefix(r, "-A"))
			}
		}
		// Emptied first, then deleted: a chain may jump to another.
		var gone []string
		for _, c := range st.chains {
			if ours(c) && (want == nil || !slices.ContainsFunc(want.Chains, func(w Chain) bool { return w.Name == c })) {
				lines = append(lines, "-F "+c)
				gone = append(gone, "-X "+c)
			}
		}
		lines = append(lines, gone...)
		if want != nil {
			// A chain declared again is emptied, then filled anew; all are
			// declared first, as a chain may jump to another.
			for _, c := range want.Chains {
				lines = append(lines, declare(f, c.Name))
			}
			for _, c := range want.Chains {
				for _, r := range c.Rules {
					lines = append(lines, "-A "+c.Name+" "+quote(r))
				}
			}
			// Inserted at the top, each before the last: backwards keeps
			// the rule set's order.
			for _, j := range slices.Backward(want.Jumps) {
				lines = append(lines, "-I "+j.From+" 1 "+quote(j.Rule))
			}
		}
		if len(lines) > 0 {
			fmt.Fprintf(&sb, "*%s\n%s\nCOMMIT\n", tc.table, strings.Join(lines, "\n"))
		}
	}
	return sb.String()
}

// declare is the restore line that creates a chain, or empties it.
func declare(f Family, chain string) string {
	if f == Bridge {
		// A new ebtables chain's policy is ACCEPT, which would end the
		// built-in chain's traversal for whatever the guest's chain does
		// not decide itself.
		return ":" + chain + " RETURN"
	}
	return ":" + chain + " - [0:0]"
}

// target is where a rule jumps (-j) or goes (-g) to.
func target(tokens []string) string {
	for i := len(tokens) - 2; i >= 0; i-- {
		if tokens[i] == "-j" || tokens[i] == "-g" {
			return tokens[i+1]
		}
	}
	return ""
}

// splitRule splits a rule as iptables-save prints it: words, and double
// quoted strings with backslash escapes.
func splitRule(s string) ([]string, error) {
	var out []string
	var word strings.Builder
	in, quoted := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quoted && c == '\\' && i+1 < len(s):
			i++
			word.WriteByte(s[i])
		case c == '"':
			quoted, in = !quoted, true
		case !quoted && c == ' ':
			if in {
				out = append(out, word.String())
				word.Reset()
				in = false
			}
		default:
			word.WriteByte(c)
			in = true
		}
	}
	if quoted {
		return nil, fmt.Errorf("unterminated quote in %q", s)
	}
	if in {
		out = append(out, word.String())
	}
	return out, nil
}

// tool is a family's save command and restore command with its flags.
type tool []string

func (t tool) Save(ctx context.Context) func() (string, error) {
	return t.start(ctx, "", t[0])
}

func (t tool) Restore(ctx context.Context, script string) func() error {
	wait := t.start(ctx, script, t[1:]...)
	return func() error {
		_, err := wait()
		return err
	}
}

// start starts a command with stdin, and returns what waits for its output.
func (t tool) start(ctx context.Context, stdin string, args ...string) func() (string, error) {
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	fail := func(err error) (string, error) {
		if errors.Is(err, exec.ErrNotFound) {
			return "", fmt.Errorf("running %s: %w; install Debian's iptables package", args[0], err)
		}
		// One line: the tools spread an error over several.
		return "", fmt.Errorf("running %s: %w: %s", strings.Join(args, " "), err, strings.Join(strings.Fields(stderr.String()), " "))
	}
	if err := cmd.Start(); err != nil {
		return func() (string, error) { return fail(err) }
	}
	return func() (string, error) {
		if err := cmd.Wait(); err != nil {
			return fail(err)
		}
		return stdout.String(), nil
	}
}
