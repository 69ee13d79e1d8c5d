package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"umlsd/config"
	"umlsd/control"
	"umlsd/internal/printable"
	"umlsd/mconsole"
)

// requireGuest checks that guest name is configured: ExitNoGuest if not.
func requireGuest(env *Env, name string) error {
	if !config.ValidName(name) {
		return exitErrorf(ExitNoGuest, "there is no guest %q: a guest name is up to 32 lowercase letters, digits, - and _, starting with a letter or digit", name)
	}
	path := filepath.Join(env.ConfigDir, name+".conf")
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return exitErrorf(ExitNoGuest, "there is no guest %s: %s does not exist; umlctl list shows the guests", name, path)
	}
	return nil
}

// loadGuest reads guest name's configuration: ExitNoGuest if there is
// none.
func loadGuest(env *Env, name string) (*config.Guest, error) {
	if err := requireGuest(env, name); err != nil {
		return nil, err
	}
	g, err := env.loader().Load(name)
	if err != nil {
		return nil, fmt.Errorf("guest %s has a broken configuration: %w", name, err)
	}
	return g, nil
}

// dialGuest reaches the supervisor of guest name: ExitNoGuest if there is
// no such guest, ExitNotRunning if it is not running.
func dialGuest(ctx context.Context, env *Env, name string) (*control.Client, error) {
	if err := requireGuest(env, name); err != nil {
		return nil, err
	}
	c, err := control.Dial(ctx, env.RuntimeDir, name)
	if err != nil {
		return nil, guestError(name, "", 0, err)
	}
	return c, nil
}

// guestError turns what the supervisor answered about command (empty for
// no mconsole command) into one sentence with its exit status.
func guestError(name, command string, timeout time.Duration, err error) error {
	var ce *mconsole.CommandError
	var re *control.RemoteError
	switch {
	case errors.Is(err, control.ErrNotRunning):
		return exitErrorf(ExitNotRunning, "guest %s is not running; start it with systemctl start uml@%s.service", name, name)
	case errors.Is(err, syscall.EACCES), errors.Is(err, control.ErrDenied):
		return exitErrorf(ExitFailure, "only root can reach the supervisor of guest %s; run umlctl as root", name)
	case errors.As(err, &ce):
		return exitErrorf(ExitFailure, "the kernel of guest %s refused %q: %s", name, ce.Command, printable.Line(ce.Message))
	case errors.Is(err, control.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		if command == "" {
			return exitErrorf(ExitFailure, "the supervisor of guest %s did not answer in time; see systemctl status uml@%s.service", name, name)
		}
		return exitErrorf(ExitFailure, "the kernel of guest %s did not answer %q within %v; it may be hung (see systemctl status uml@%s.service), or give it more time with --timeout", name, command, timeout, name)
	case errors.As(err, &re):
		return exitErrorf(ExitFailure, "the supervisor of guest %s: %s", name, printable.Line(re.Message))
	}
	return exitErrorf(ExitFailure, "reaching the supervisor of guest %s: %v", name, err)
}
