// Command uml-supervisor is the main process of uml@NAME.service: it boots
// the User-Mode Linux guest configured in /etc/uml/NAME.conf, jailed and
// unprivileged, and stops it cleanly. See uml-supervisor(8).
//
//	uml-supervisor run NAME
//	uml-supervisor cleanup NAME
//
// UMLSD_CONFIG_DIR overrides /etc/uml and UMLSD_RUNTIME_DIR /run/uml, for
// tests.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/coreos/go-systemd/v22/journal"

	"umlsd/config"
	"umlsd/supervisor"
)

const usage = "usage: uml-supervisor run|cleanup NAME"

// kernelPath is where make install puts umlsd's kernel, the default of
// Kernel=; the Makefile sets it at link time.
var kernelPath = config.DefaultKernel

func main() {
	if len(os.Args) == 2 && os.Args[1] == supervisor.ExecKernelCommand {
		// The exec stage: it returns only if it failed, and has told why.
		_ = supervisor.ExecKernel()
		os.Exit(127)
	}
	// Run by hand, a closed terminal must not kill the supervisor and
	// leave its guest unsupervised.
	signal.Ignore(syscall.SIGHUP)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stderr)
	stop()
	os.Exit(supervisor.ExitStatus(err))
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	if len(args) != 2 || args[0] != "run" && args[0] != "cleanup" {
		fmt.Fprintln(stderr, usage)
		return &supervisor.ExitError{Status: 2, Err: errors.New(usage)}
	}
	name := args[1]
	s := &supervisor.Supervisor{
		Loader:     config.Loader{Dir: envOr("UMLSD_CONFIG_DIR", config.DefaultDir), Kernel: kernelPath},
		RuntimeDir: envOr("UMLSD_RUNTIME_DIR", supervisor.RuntimeDir),
		Self:       "/proc/self/exe",
		Log:        &supervisor.TextLog{Events: stderr, Output: os.Stdout},
	}
	if ok, _ := journal.StderrIsJournalStream(); ok {
		s.Log = supervisor.JournalLog{Guest: name}
	}
	if os.Getenv("NOTIFY_SOCKET") != "" {
		s.Notify = func(state string) { _, _ = daemon.SdNotify(false, state) }
	}
	if args[0] == "cleanup" {
		err := s.Cleanup(ctx, name)
		if err != nil {
			s.Log.Event(journal.PriErr, err.Error())
		}
		return err
	}
	return s.Run(ctx, name) // it logs its errors

}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
