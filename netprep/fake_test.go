package netprep

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// fakeTables is one family's tables in memory, as strict as the real ones
// where the firewall could go wrong: a chain that still has rules or is
// still jumped to cannot be deleted, a missing rule cannot be deleted.
type fakeTables struct {
	family Family
	tables map[string]map[string][]string // table → chain → rules
	calls  []string
	// budget, when set, is how many more changes succeed: a crash midway.
	budget *int
}

func newFakeTables(f Family) *fakeTables {
	ft := &fakeTables{family: f, tables: map[string]map[string][]string{}}
	for table, chains := range builtins[f] {
		ft.tables[table] = map[string][]string{}
		for _, c := range chains {
			ft.tables[table][c] = nil
		}
	}
	return ft
}

// call records a change, or fails it when the budget is spent.
func (ft *fakeTables) call(format string, args ...any) error {
	if ft.budget != nil {
		if *ft.budget <= 0 {
			return errCrashed
		}
		*ft.budget--
	}
	ft.calls = append(ft.calls, fmt.Sprintf(format, args...))
	return nil
}

var errCrashed = errors.New("crashed")

func (ft *fakeTables) chain(table, chain string) ([]string, error) {
	rules, ok := ft.tables[table][chain]
	if !ok {
		return nil, fmt.Errorf("no chain %s in table %s", chain, table)
	}
	return rules, nil
}

func (ft *fakeTables) ListChains(table string) ([]string, error) {
	var out []string
	for c := range ft.tables[table] {
		out = append(out, c)
	}
	slices.Sort(out)
	return out, nil
}

func (ft *fakeTables) List(table, chain string) ([]string, error) {
	rules, err := ft.chain(table, chain)
	var out []string
	for _, r := range rules {
		out = append(out, "-A "+chain+" "+r)
	}
	return out, err
}

func (ft *fakeTables) ClearChain(table, chain string) error {
	if err := ft.call("%s -t %s -F/-N %s", ft.family, table, chain); err != nil {
		return err
	}
	ft.tables[table][chain] = nil
	return nil
}

func (ft *fakeTables) Append(table, chain string, rule ...string) error {
	if err := ft.call("%s -t %s -A %s %s", ft.family, table, chain, quote(rule)); err != nil {
		return err
	}
	rules, err := ft.chain(table, chain)
	if err == nil {
		ft.tables[table][chain] = append(rules, quote(rule))
	}
	return err
}

func (ft *fakeTables) Insert(table, chain string, pos int, rule ...string) error {
	if err := ft.call("%s -t %s -I %s %d %s", ft.family, table, chain, pos, quote(rule)); err != nil {
		return err
	}
	rules, err := ft.chain(table, chain)
	if err == nil {
		ft.tables[table][chain] = slices.Insert(rules, pos-1, quote(rule))
	}
	return err
}

func (ft *fakeTables) Exists(table, chain string, rule ...string) (bool, error) {
	rules, err := ft.chain(table, chain)
	return slices.Contains(rules, quote(rule)), err
}

func (ft *fakeTables) Delete(table, chain string, rule ...string) error {
	if err := ft.call("%s -t %s -D %s %s", ft.family, table, chain, quote(rule)); err != nil {
		return err
	}
	rules, err := ft.chain(table, chain)
	if err != nil {
		return err
	}
	i := slices.Index(rules, quote(rule))
	if i < 0 {
		return fmt.Errorf("no rule %q in %s", quote(rule), chain)
	}
	ft.tables[table][chain] = slices.Delete(rules, i, i+1)
	return nil
}

func (ft *fakeTables) DeleteChain(table, chain string) error {
	if err := ft.call("%s -t %s -X %s", ft.family, table, chain); err != nil {
		return err
	}
	rules, err := ft.chain(table, chain)
	if err != nil {
		return err
	}
	if len(rules) > 0 {
		return fmt.Errorf("chain %s is not empty", chain)
	}
	for c, rs := range ft.tables[table] {
		for _, r := range rs {
			if strings.HasSuffix(r, " "+chain) {
				return fmt.Errorf("chain %s is jumped to from %s", chain, c)
			}
		}
	}
	delete(ft.tables[table], chain)
	return nil
}

// dump is the tables as text, sorted: equal dumps, equal states.
func (ft *fakeTables) dump() string {
	var lines []string
	for table, chains := range ft.tables {
		for c, rules := range chains {
			lines = append(lines, fmt.Sprintf("%s %s :%s", ft.family, table, c))
			for i, r := range rules {
				lines = append(lines, fmt.Sprintf("%s %s %s %d %s", ft.family, table, c, i, r))
			}
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// fakeHost is a host's three families of tables.
type fakeHost []*fakeTables

func newFakeHost() (*Firewall, fakeHost) {
	v4, v6, eb := newFakeTables(IPv4), newFakeTables(IPv6), newFakeTables(Bridge)
	return &Firewall{v4: v4, v6: v6, bridge: eb}, fakeHost{v4, v6, eb}
}

func (h fakeHost) dump() string {
	var parts []string
	for _, ft := range h {
		parts = append(parts, ft.dump())
	}
	return strings.Join(parts, "\n")
}

// crashAfter makes every change after the next n fail; -1 lifts that.
func (h fakeHost) crashAfter(n int) {
	budget := &n
	if n < 0 {
		budget = nil
	}
	for _, ft := range h {
		ft.budget = budget
	}
}
