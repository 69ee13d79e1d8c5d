// Command umlctl is the administrator's tool for User-Mode Linux guests run
// by umlsd: list, status, start and stop, the serial and management
// consoles, COW files, and a dry run of the configuration. See umlctl(1).
package main

import (
	"bytes"
	"context"
	"os"
	"os/signal"
	"syscall"

	"umlsd/cli"
	"umlsd/config"
	"umlsd/generator"
)

// templatePath is where make install puts uml@.service: the Makefile sets
// it at link time, as uml-generator's, so that check --units prints the
// links the installed generator writes.
var templatePath = generator.DefaultTemplate

// kernelPath is where make install puts umlsd's kernel, the default of
// Kernel=; the Makefile sets it at link time in each program.
var kernelPath = config.DefaultKernel

func main() {
	ctx, stop := interruptible(context.Background())
	err := run(ctx, os.Args[1:])
	stop()
	os.Exit(cli.ExitStatus(err))
}

// interruptible is a context that SIGTERM or SIGINT ends. Only the first:
// once the context is done, they have their default effect again, so that
// a second one ends an umlctl that does not.
func interruptible(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(parent)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-sigs:
		case <-ctx.Done():
		}
		signal.Stop(sigs) // before the context is done
		cancel()
	}()
	return ctx, func() { cancel(); <-done }
}

func run(ctx context.Context, args []string) error {
	env := cli.HostEnv(os.Stdin, os.Stdout, os.Stderr)
	env.Units = generator.Options{Template: templatePath, InContainer: inContainer()}
	env.DefaultKernel = kernelPath
	return cli.Run(ctx, args, env)
}

// inContainer says whether systemd runs in a container, as it tells its
// generators (SYSTEMD_VIRTUALIZATION=container:…): it writes the
// container's kind to /run/systemd/container.
func inContainer() bool {
	b, err := os.ReadFile("/run/systemd/container")
	return err == nil && len(bytes.TrimSpace(b)) > 0
}
