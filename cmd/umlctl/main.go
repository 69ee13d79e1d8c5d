// Command umlctl is the administrator's tool for User-Mode Linux guests run
// by umlsd: list, status, start and stop, the serial and management
// consoles, COW files, and a dry run of the configuration. See umlctl(1).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"umlsd/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	err := run(ctx, os.Args[1:])
	stop()
	os.Exit(cli.ExitStatus(err))
}

func run(ctx context.Context, args []string) error {
	return cli.Run(ctx, args, cli.HostEnv(os.Stdin, os.Stdout, os.Stderr))
}
