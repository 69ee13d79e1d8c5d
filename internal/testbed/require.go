package testbed

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// inCI reports whether the tests run in CI, where a privileged test that
// cannot run is a failure rather than a skip.
func inCI() bool {
	return os.Getenv("CI") == "true"
}

// skipOrFail skips the test locally and fails it in CI.
func skipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if inCI() {
		t.Fatalf("%s (CI=true: a skipped privileged test is a failure)", msg)
	}
	t.Skip(msg)
}

// RequireRoot skips the test when it does not run as root, unless CI=true is
// set in the environment: there it fails the test, because in CI a skip of a
// privileged test is a failure.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "test needs root (euid is %d)", os.Geteuid())
	}
}

// packageOf names the Debian package that provides a program the tests use.
func packageOf(program string) string {
	switch program {
	case "systemd-nspawn":
		return "systemd-container"
	case "nsenter", "unshare", "setpriv":
		return "util-linux"
	case "mount", "umount", "findmnt":
		return "mount"
	case "systemctl", "journalctl":
		return "systemd"
	case "linux.uml":
		return "user-mode-linux"
	case "uml_mconsole", "uml_moo", "uml_mkcow":
		return "uml-utilities"
	case "busybox":
		return "busybox-static"
	case "mke2fs", "e2fsck", "dumpe2fs", "debugfs":
		return "e2fsprogs"
	case "iptables", "ip6tables", "ebtables":
		return "iptables"
	case "dnsmasq":
		return "dnsmasq-base"
	case "dig":
		return "bind9-dnsutils"
	case "ip":
		return "iproute2"
	case "make":
		return "make"
	case "pkg-config":
		return "pkg-config"
	}
	return ""
}

// RequireFile skips the test when path does not exist, with the same rule
// as RequireRoot: in CI (CI=true) it fails the test. what says what the
// file is.
func RequireFile(t testing.TB, path, what string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		skipOrFail(t, "test needs %s (%s): %v", path, what, err)
	}
}

// RequireCommands skips the test when one of the programs is not in PATH,
// with the same rule as RequireRoot: in CI (CI=true) it fails the test. The
// message names the Debian package that provides the program.
func RequireCommands(t testing.TB, names ...string) {
	t.Helper()
	for _, name := range names {
		if _, err := exec.LookPath(name); err == nil {
			continue
		}
		if pkg := packageOf(name); pkg != "" {
			skipOrFail(t, "test needs %s (Debian package %s): run `make deps` as root", name, pkg)
		}
		skipOrFail(t, "test needs %s, which is not in PATH: run `make deps` as root", name)
	}
}

// ProjectKernel is umlsd's own guest kernel as `make kernel` builds it,
// build/kernel/linux in the repository. `make test` builds it first;
// without it the test skips, or fails in CI (CI=true).
func ProjectKernel(t testing.TB) string {
	t.Helper()
	repo, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(repo, "build", "kernel", "linux")
	if _, err := os.Stat(path); err != nil {
		skipOrFail(t, "test needs umlsd's kernel, %s: run `make kernel`", path)
	}
	return path
}
