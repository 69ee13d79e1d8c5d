package netprep

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/coreos/go-iptables/iptables"
)

// ruleTables is what the firewall needs of one family's tables: the part of
// go-iptables' API it uses. An interface so that ebtables, which go-iptables
// does not drive, and the tests' fake can stand in.
type ruleTables interface {
	ListChains(table string) ([]string, error)
	// List is the chain in iptables -S form: "-A CHAIN MATCH… -j TARGET".
	List(table, chain string) ([]string, error)
	// ClearChain creates the chain, or empties it if it exists.
	ClearChain(table, chain string) error
	Append(table, chain string, rule ...string) error
	Insert(table, chain string, pos int, rule ...string) error
	Exists(table, chain string, rule ...string) (bool, error)
	Delete(table, chain string, rule ...string) error
	DeleteChain(table, chain string) error
}

// Firewall applies and removes guests' rule sets. Concurrent supervisors
// may use it at once: iptables and ebtables serialise their own changes,
// and no two guests share a chain or a rule.
type Firewall struct {
	v4, v6, bridge ruleTables
}

// NewFirewall drives the host's iptables, ip6tables and ebtables.
func NewFirewall() (*Firewall, error) {
	v4, err := iptables.New(iptables.IPFamily(iptables.ProtocolIPv4))
	if err != nil {
		return nil, fmt.Errorf("finding iptables: %w; install Debian's iptables package", err)
	}
	v6, err := iptables.New(iptables.IPFamily(iptables.ProtocolIPv6))
	if err != nil {
		return nil, fmt.Errorf("finding ip6tables: %w; install Debian's iptables package", err)
	}
	eb, err := newEbtables()
	if err != nil {
		return nil, err
	}
	return &Firewall{v4: v4, v6: v6, bridge: eb}, nil
}

func (fw *Firewall) of(f Family) ruleTables {
	switch f {
	case IPv4:
		return fw.v4
	case IPv6:
		return fw.v6
	}
	return fw.bridge
}

// builtins are the built-in chains of each table: the only chains in which
// the firewall adds or removes rules, its jumps.
var builtins = map[Family]map[string][]string{
	IPv4: {
		"raw":    {"PREROUTING", "OUTPUT"},
		"mangle": {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"},
		"filter": {"INPUT", "FORWARD", "OUTPUT"},
	},
	Bridge: {"filter": {"INPUT", "FORWARD", "OUTPUT"}},
}

func init() { builtins[IPv6] = builtins[IPv4] }

// Apply installs rule set rs: first every chain with its rules, then the
// jumps to them, so that nothing reaches a chain before it is complete.
// The tap must not exist yet (see OpenTap): the guest is fenced before its
// first packet. Applying a rule set twice leaves the same rules.
func (fw *Firewall) Apply(ctx context.Context, rs RuleSet) error {
	for _, t := range rs {
		tbl := fw.of(t.Family)
		for _, c := range t.Chains {
			if err := tbl.ClearChain(t.Name, c.Name); err != nil {
				return fmt.Errorf("creating the %s chain %s in table %s: %w", t.Family, c.Name, t.Name, err)
			}
			for _, r := range c.Rules {
				if err := ctx.Err(); err != nil {
					return err
				}
				if err := tbl.Append(t.Name, c.Name, r...); err != nil {
					return fmt.Errorf("adding %s rule %q to %s: %w", t.Family, quote(r), c.Name, err)
				}
			}
		}
	}
	for _, t := range rs {
		tbl := fw.of(t.Family)
		// Inserted at the top, each before the last: backwards keeps the
		// rule set's order.
		for _, j := range slices.Backward(t.Jumps) {
			if err := ctx.Err(); err != nil {
				return err
			}
			ok, err := tbl.Exists(t.Name, j.From, j.Rule...)
			if err == nil && !ok {
				err = tbl.Insert(t.Name, j.From, 1, j.Rule...)
			}
			if err != nil {
				return fmt.Errorf("adding %s rule %q to %s: %w", t.Family, quote(j.Rule), j.From, err)
			}
		}
	}
	return nil
}

// Teardown removes everything guest name owns in every table, found by
// name: the rules of built-in chains that jump to its chains, then the
// chains. It touches nothing else, and does nothing when nothing is left.
// It goes on after an error and returns them all.
func (fw *Firewall) Teardown(ctx context.Context, name string) error {
	base := Base(name)
	var errs []error
	for _, tc := range chainsOf {
		if err := ctx.Err(); err != nil {
			return err
		}
		tbl := fw.of(tc.family)
		existing, err := tbl.ListChains(tc.table)
		if err != nil {
			errs = append(errs, fmt.Errorf("listing the %s chains of table %s: %w", tc.family, tc.table, err))
			continue
		}
		var ours []string
		for _, s := range tc.suffixes {
			if slices.Contains(existing, base+s) {
				ours = append(ours, base+s)
			}
		}
		if len(ours) == 0 {
			continue
		}
		for _, from := range builtins[tc.family][tc.table] {
			errs = append(errs, removeJumps(tbl, tc.family, tc.table, from, ours))
		}
		for _, c := range ours {
			err := tbl.ClearChain(tc.table, c)
			if err == nil {
				err = tbl.DeleteChain(tc.table, c)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("removing the %s chain %s from table %s: %w", tc.family, c, tc.table, err))
			}
		}
	}
	return errors.Join(errs...)
}

// removeJumps deletes the rules of built-in chain from that jump to one of
// ours.
func removeJumps(tbl ruleTables, f Family, table, from string, ours []string) error {
	lines, err := tbl.List(table, from)
	if err != nil {
		return fmt.Errorf("listing the %s chain %s of table %s: %w", f, from, table, err)
	}
	var errs []error
	for _, line := range lines {
		rule, ok := strings.CutPrefix(line, "-A "+from+" ")
		if !ok {
			continue
		}
		tokens, err := splitRule(rule)
		if err != nil || !slices.Contains(ours, target(tokens)) {
			continue
		}
		if err := tbl.Delete(table, from, tokens...); err != nil {
			errs = append(errs, fmt.Errorf("deleting the %s rule %q from %s: %w", f, rule, from, err))
		}
	}
	return errors.Join(errs...)
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

// splitRule splits a rule as iptables -S prints it: words, and double
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
