// Command uml-generator is the systemd generator of umlsd: it turns each
// guest configuration in /etc/uml into a drop-in for uml@NAME.service and
// the links of its [Install] section. See uml.conf(5).
//
//	uml-generator [--dry-run] NORMAL [EARLY LATE]
//
// UMLSD_CONFIG_DIR overrides /etc/uml, for tests.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"umlsd/config"
	"umlsd/generator"
)

// templatePath is where make install puts uml@.service; the Makefile sets
// it at link time from pkg-config.
var templatePath = generator.DefaultTemplate

// kernelPath is where make install puts umlsd's kernel, the default of
// Kernel= (RequiresMountsFor=); the Makefile sets it at link time.
var kernelPath = config.DefaultKernel

const tag = "uml-generator"

var errUsage = errors.New("usage: uml-generator [--dry-run] NORMAL [EARLY LATE]")

func main() {
	err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr)
	switch {
	case err == nil:
	case errors.Is(err, errUsage):
		fmt.Fprintf(os.Stderr, "%s: %v\n", tag, err)
		os.Exit(2)
	default: // run has logged it
		os.Exit(1)
	}
}

func run(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(tag, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	dryRun := fs.Bool("dry-run", false, "print what would be written instead of writing it")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	dirs := fs.Args()
	if !(len(dirs) == 1 || len(dirs) == 3 || *dryRun && len(dirs) == 0) {
		return errUsage
	}

	level := generator.LevelInfo
	if v, ok := generator.ParseLevel(os.Getenv("SYSTEMD_LOG_LEVEL")); ok {
		level = v
	}
	var kmsg io.Writer
	if f := generator.OpenKmsg("/dev/kmsg"); f != nil {
		defer f.Close()
		kmsg = f
	}
	dir := config.DefaultDir
	if d := os.Getenv("UMLSD_CONFIG_DIR"); d != "" {
		dir = d
	}
	gen := generator.Generator{
		Loader: config.Loader{Dir: dir, Kernel: kernelPath},
		Options: generator.Options{
			Template:    templatePath,
			InContainer: strings.HasPrefix(os.Getenv("SYSTEMD_VIRTUALIZATION"), "container:"),
		},
		Log: generator.NewLogger(tag, os.Getpid(), level, kmsg, stderr),
	}
	var err error
	if *dryRun {
		err = gen.DryRun(stdout)
	} else {
		// One argument means all three directories; only NORMAL is used.
		err = gen.Run(dirs[0])
	}
	// Each guest's errors are logged by the generator; what remains is
	// about the whole run, and belongs in the kernel log just as well.
	if err != nil && !errors.Is(err, generator.ErrFailed) {
		gen.Log.Error(err.Error())
	}
	return err
}
