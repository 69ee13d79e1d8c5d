package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"umlsd/control"
	"umlsd/internal/printable"
)

// detachKey is Ctrl-], as in telnet: it ends the session, the guest runs on.
const detachKey = 0x1d

func newConsoleCmd(env *Env) *cobra.Command {
	var force bool
	c := &cobra.Command{
		Use:   "console NAME",
		Short: "Attach to a guest's serial console",
		Long: `Attaches the terminal to the serial console of guest NAME: its recent output is
shown first, then what it writes; everything typed goes to the guest, Ctrl-C
included. Ctrl-] detaches, and the guest keeps running. The guest's console
lines go to the journal all the while.

One umlctl console at a time: another is refused, unless --force, which takes
the console over and tells the first one. Without a terminal on its input,
umlctl forwards what it reads; at the end of its input it keeps showing the
output until the session ends or it is interrupted.`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, a []string) error {
			return runConsole(c.Context(), env, a[0], force)
		},
	}
	c.Flags().BoolVar(&force, "force", false, "take the console over from the umlctl console attached to it")
	return c
}

// attachTimeout bounds reaching the supervisor and attaching.
const attachTimeout = 10 * time.Second

func runConsole(ctx context.Context, env *Env, name string, force bool) error {
	// A hangup (the terminal or the ssh session went away) detaches, and
	// a closed output (umlctl console | tee, tee gone) ends the output
	// with an error, rather than ending umlctl with the terminal left
	// raw. SIGINT and SIGTERM end ctx. Registered first: a signal that
	// comes while attaching must not kill umlctl either.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGPIPE)
	defer signal.Stop(sigs)

	actx, cancel := context.WithTimeout(ctx, attachTimeout)
	defer cancel()
	client, err := dialGuest(actx, env, name)
	if err != nil {
		return err
	}
	defer client.Close()

	fd, isTerm := -1, false
	if f, ok := env.Stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fd, isTerm = int(f.Fd()), true
	}
	var opts control.AttachOptions
	opts.Force = force
	if isTerm {
		if cols, rows, err := term.GetSize(fd); err == nil {
			opts.Rows, opts.Cols = uint16(rows), uint16(cols)
		}
	}
	s, err := client.Attach(actx, opts)
	if errors.Is(err, control.ErrBusy) {
		return exitErrorf(ExitFailure, "another umlctl console is attached to guest %s; detach it, or take the console over with umlctl console --force %s", name, name)
	}
	if errors.Is(err, control.ErrNotRunning) {
		return exitErrorf(ExitNotRunning, "guest %s is not running: its kernel has not started or has exited", name)
	}
	if err != nil {
		return guestError(name, "", 0, err)
	}
	defer s.Close()

	nl := "\n"
	if isTerm {
		old, err := term.MakeRaw(fd)
		if err != nil {
			return fmt.Errorf("putting the terminal in raw mode: %w", err)
		}
		defer term.Restore(fd, old)
		nl = "\r\n" // raw mode: no \n to \r\n translation
		winch := make(chan os.Signal, 1)
		signal.Notify(winch, syscall.SIGWINCH)
		defer signal.Stop(winch)
		done := make(chan struct{})
		defer close(done)
		go followWindow(done, winch, func() {
			if cols, rows, err := term.GetSize(fd); err == nil {
				_ = s.Resize(uint16(rows), uint16(cols))
			}
		})
	}
	fmt.Fprintf(env.Stderr, "Connected to %s's console; press Ctrl-] to detach.%s", name, nl)

	out := make(chan error, 1)
	go func() {
		_, err := io.Copy(outputWriter{env.Stdout}, s)
		out <- err
	}()
	in := make(chan error, 1)
	go func() { in <- forwardInput(env.Stdin, s) }()

	detached := func() error {
		s.Close()
		<-out // no output after the message, nor after returning
		fmt.Fprintf(env.Stderr, "%sDetached from %s's console; the guest keeps running.%s", nl, name, nl)
		return nil
	}
	for {
		select {
		case err := <-in:
			if errors.Is(err, errDetach) {
				return detached()
			}
			// End of input (or a failed write, which the output side
			// reports): keep showing the output.
			in = nil
		case err := <-out:
			var ended *control.SessionEnded
			var werr outputError
			switch {
			case errors.As(err, &ended):
				fmt.Fprintf(env.Stderr, "%s%s.%s", nl, capitalize(printable.Line(ended.Reason)), nl)
				return nil
			case errors.As(err, &werr):
				return exitErrorf(ExitFailure, "writing the console's output failed (%v), so umlctl detached from guest %s's console; the guest keeps running", werr.err, name)
			}
			return exitErrorf(ExitFailure, "the connection to the supervisor of guest %s broke (%v); see systemctl status uml@%s.service", name, orEOF(err), name)
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				return detached()
			}
			// SIGPIPE: the write to the output fails too, and out
			// reports it.
		case <-ctx.Done():
			return detached()
		}
	}
}

// followWindow calls resized for each window size change on winch, until
// done is closed.
func followWindow(done <-chan struct{}, winch <-chan os.Signal, resized func()) {
	for {
		select {
		case <-winch:
			resized()
		case <-done:
			return
		}
	}
}

// outputWriter tells its write errors from the console stream's.
type outputWriter struct{ w io.Writer }

func (o outputWriter) Write(p []byte) (int, error) {
	n, err := o.w.Write(p)
	if err != nil {
		err = outputError{err}
	}
	return n, err
}

// outputError is a failed write of the console's output.
type outputError struct{ err error }

func (e outputError) Error() string { return "writing the console's output: " + e.err.Error() }
func (e outputError) Unwrap() error { return e.err }

// errDetach: the user pressed the detach key.
var errDetach = errors.New("detached")

// forwardInput copies r to w up to the detach key, which it does not
// forward: errDetach then, nil at the end of r.
func forwardInput(r io.Reader, w io.Writer) error {
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			p := buf[:n]
			i := bytes.IndexByte(p, detachKey)
			if i >= 0 {
				p = p[:i]
			}
			if len(p) > 0 {
				if _, werr := w.Write(p); werr != nil {
					return werr
				}
			}
			if i >= 0 {
				return errDetach
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading input: %w", err)
		}
	}
}

func orEOF(err error) error {
	if err == nil {
		return io.EOF
	}
	return err
}

func capitalize(s string) string {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return s
	}
	return string(s[0]-'a'+'A') + s[1:]
}
