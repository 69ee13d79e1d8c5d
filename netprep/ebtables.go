package netprep

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
)

// ebtables drives Debian's ebtables (the nf_tables one, ebtables-nft) for
// the bridge family, which go-iptables does not cover. Its methods are
// go-iptables' (ruleTables), with List in the same "-A CHAIN RULE" form.
type ebtables struct {
	path string
}

func newEbtables() (*ebtables, error) {
	path, err := exec.LookPath("ebtables")
	if err != nil {
		return nil, fmt.Errorf("finding ebtables: %w; install Debian's iptables package, which provides it", err)
	}
	return &ebtables{path: path}, nil
}

// errNoRule is ebtables' exit status for a rule it did not find.
const errNoRule = 1

func (e *ebtables) run(table string, args ...string) (string, error) {
	// --concurrent takes the lock that the legacy ebtables needs; the
	// nf_tables one serialises its changes itself and accepts the flag.
	args = append([]string{"--concurrent", "-t", table}, args...)
	cmd := exec.Command(e.path, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", &ebError{args: args, err: err, stderr: strings.TrimSpace(stderr.String())}
	}
	return stdout.String(), nil
}

type ebError struct {
	args   []string
	err    error
	stderr string
}

func (e *ebError) Error() string {
	return fmt.Sprintf("ebtables %s: %v: %s", quote(e.args), e.err, e.stderr)
}

func (e *ebError) exitStatus() int {
	var ee *exec.ExitError
	if errors.As(e.err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

func (e *ebtables) ListChains(table string) ([]string, error) {
	out, err := e.run(table, "-L")
	if err != nil {
		return nil, err
	}
	var chains []string
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(line, "Bridge chain: "); ok {
			name, _, _ := strings.Cut(rest, ",")
			chains = append(chains, name)
		}
	}
	return chains, nil
}

func (e *ebtables) List(table, chain string) ([]string, error) {
	out, err := e.run(table, "-L", chain)
	if err != nil {
		return nil, err
	}
	var rules []string
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "-") {
			rules = append(rules, "-A "+chain+" "+line)
		}
	}
	return rules, nil
}

func (e *ebtables) ClearChain(table, chain string) error {
	chains, err := e.ListChains(table)
	if err != nil {
		return err
	}
	for _, c := range chains {
		if c == chain {
			_, err := e.run(table, "-F", chain)
			return err
		}
	}
	// A new chain's policy is ACCEPT, which would end the built-in chain's
	// traversal for whatever the guest's chain does not decide itself.
	_, err = e.run(table, "-N", chain, "-P", "RETURN")
	return err
}

func (e *ebtables) Append(table, chain string, rule ...string) error {
	_, err := e.run(table, append([]string{"-A", chain}, rule...)...)
	return err
}

func (e *ebtables) Insert(table, chain string, pos int, rule ...string) error {
	_, err := e.run(table, append([]string{"-I", chain, strconv.Itoa(pos)}, rule...)...)
	return err
}

func (e *ebtables) Exists(table, chain string, rule ...string) (bool, error) {
	_, err := e.run(table, append([]string{"--check", chain}, rule...)...)
	var ee *ebError
	if errors.As(err, &ee) && ee.exitStatus() == errNoRule {
		return false, nil
	}
	return err == nil, err
}

func (e *ebtables) Delete(table, chain string, rule ...string) error {
	_, err := e.run(table, append([]string{"-D", chain}, rule...)...)
	return err
}

func (e *ebtables) DeleteChain(table, chain string) error {
	_, err := e.run(table, "-X", chain)
	return err
}
