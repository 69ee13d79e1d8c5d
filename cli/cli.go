// Package cli is umlctl, the administrator's tool: one cobra command per
// verb, each reaching the host through Env so that tests can replace
// systemd, the supervisors and the clock.
//
// Exit statuses follow systemctl's, so that scripts can rely on them:
// 0 success, 1 failure, 2 usage error, 3 the guest is not running (for
// the verbs that need it running), 4 no such guest.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"umlsd/config"
	"umlsd/generator"
	"umlsd/umlkernel"
)

// Exit statuses.
const (
	ExitFailure    = 1
	ExitUsage      = 2
	ExitNotRunning = 3
	ExitNoGuest    = 4
)

// ExitError is an error with the exit status it should give.
type ExitError struct {
	Status int
	Err    error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// ExitStatus is the exit status for err: 0 for nil, ExitError's status, or
// ExitFailure.
func ExitStatus(err error) int {
	if err == nil {
		return 0
	}
	var e *ExitError
	if errors.As(err, &e) {
		return e.Status
	}
	return ExitFailure
}

func exitErrorf(status int, format string, args ...any) error {
	return &ExitError{Status: status, Err: fmt.Errorf(format, args...)}
}

// Env is what umlctl reaches the host through.
type Env struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer

	// ConfigDir holds the guests' configurations (/etc/uml).
	ConfigDir string
	// DefaultKernel is the default of Kernel=: umlsd's own kernel, where
	// it was installed.
	DefaultKernel string
	// RuntimeDir holds the running guests' runtime directories (/run/uml),
	// where each supervisor's control socket is.
	RuntimeDir string

	Now     func() time.Time
	Systemd func(context.Context) (systemd, error)
	// Units are the options the installed generator renders units with
	// (check --units).
	Units generator.Options
	// Checker checks the host for a guest's start (check); nil is the
	// host's own, supervisor.NewChecker.
	Checker GuestChecker
	// Kernel asks a running guest's supervisor and kernel; errNotRunning
	// if the guest has no supervisor.
	Kernel func(ctx context.Context, name string) (kernelInfo, error)
	// Traffic reads a running guest's packet and drop counters.
	Traffic func(context.Context, *config.Guest) (traffic, error)
	// ConsoleLog reads a guest's last n console lines.
	ConsoleLog func(ctx context.Context, name string, n int) ([]string, error)
	// KernelRelease reads the release of the kernel binary at path.
	KernelRelease func(path string) (string, error)
}

// loader reads the guests' configurations as the installed programs do.
func (e *Env) loader() config.Loader {
	return config.Loader{Dir: e.ConfigDir, Kernel: e.DefaultKernel}
}

// HostEnv is the Env of the host umlctl runs on. UMLSD_CONFIG_DIR and
// UMLSD_RUNTIME_DIR override the directories, as for uml-supervisor.
func HostEnv(stdin io.Reader, stdout, stderr io.Writer) *Env {
	runtimeDir := envOr("UMLSD_RUNTIME_DIR", "/run/uml")
	return &Env{
		Stdin:         stdin,
		Stdout:        stdout,
		Stderr:        stderr,
		ConfigDir:     envOr("UMLSD_CONFIG_DIR", config.DefaultDir),
		DefaultKernel: config.DefaultKernel,
		RuntimeDir:    runtimeDir,
		Now:           time.Now,
		Systemd:       dialSystemd,
		Kernel:        hostKernel(runtimeDir),
		Traffic:       hostTraffic,
		ConsoleLog:    journalConsole,
		KernelRelease: umlkernel.Release,
	}
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// Run runs umlctl with args (without the program name). Errors are
// printed to env.Stderr, prefixed with "umlctl: ".
func Run(ctx context.Context, args []string, env *Env) error {
	root := newRootCmd(env)
	if args == nil {
		args = []string{} // not os.Args
	}
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err != nil && !errors.Is(err, errSilent) {
		fmt.Fprintf(env.Stderr, "umlctl: %v\n", err)
	}
	return err
}

func newRootCmd(env *Env) *cobra.Command {
	root := &cobra.Command{
		Use:   "umlctl",
		Short: "Manage User-Mode Linux guests run by umlsd",
		Long: `umlctl manages the User-Mode Linux guests that umlsd runs as uml@NAME.service,
one per configuration file /etc/uml/NAME.conf.`,
		// Without a verb, list the guests, as machinectl does.
		Args:          args(cobra.NoArgs),
		RunE:          func(c *cobra.Command, _ []string) error { return runList(c.Context(), env, false) },
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.SetIn(env.Stdin)
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	// Usage errors (unknown flags, wrong argument counts) exit 2.
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &ExitError{Status: ExitUsage, Err: fmt.Errorf("%w; see %s --help", err, c.CommandPath())}
	})
	root.AddCommand(
		newListCmd(env),
		newStatusCmd(env),
		newJobCmd(env, "start", "Start a guest and wait until it is ready"),
		newJobCmd(env, "stop", "Shut a guest down cleanly and wait until it has stopped"),
		newJobCmd(env, "restart", "Restart a guest and wait until it is ready again"),
		newConsoleCmd(env),
		newCowCmd(env),
		newCheckCmd(env),
	)
	root.AddCommand(mconsoleCommands(env)...)
	return root
}

// args wraps a cobra positional-argument check so that a wrong count exits
// with ExitUsage.
func args(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(c *cobra.Command, a []string) error {
		if err := check(c, a); err != nil {
			return &ExitError{Status: ExitUsage, Err: fmt.Errorf("%w; see %s --help", err, c.CommandPath())}
		}
		return nil
	}
}
