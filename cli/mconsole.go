package cli

import (
	"context"
	"fmt"
	"strings"
	"time"
	"umlsd/internal/printable"

	"github.com/spf13/cobra"
)

// defaultTimeout bounds a management console command.
const defaultTimeout = 10 * time.Second

// mconsoleCommands are the verbs that go to a guest's management console
// through its supervisor, which reaches the kernel inside its jail.
func mconsoleCommands(env *Env) []*cobra.Command {
	return []*cobra.Command{
		mconsoleVerb(env, &cobra.Command{
			Use:   "sysrq NAME KEY",
			Short: "Send a magic SysRq key to a guest's kernel",
			Long: `Sends the magic SysRq KEY to the kernel of guest NAME (mconsole sysrq) and prints
what the kernel said. KEY is one lowercase letter or digit: s syncs the disks, u
remounts them read-only, w shows blocked tasks, h lists the keys.`,
			Args: args(cobra.ExactArgs(2)),
		}, func(a []string) (string, error) {
			key := a[1]
			if len(key) != 1 || !(key[0] >= 'a' && key[0] <= 'z' || key[0] >= '0' && key[0] <= '9') {
				return "", exitErrorf(ExitUsage, "%q is not a SysRq key: give one lowercase letter or digit, such as s to sync the guest's disks", key)
			}
			return "sysrq " + key, nil
		}, nil),
		mconsoleVerb(env, &cobra.Command{
			Use:   "mconsole NAME COMMAND...",
			Short: "Run a raw management console command on a guest's kernel",
			Long: `Runs COMMAND (its words joined with spaces) on the management console of guest
NAME's kernel and prints the reply: for experts, see the kernel's
Documentation/virt/uml/user_mode_linux_howto_v2.rst. Flags go before NAME.
stop and go freeze and thaw the guest as umlctl freeze and thaw do.`,
			Args: args(cobra.MinimumNArgs(2)),
		}, func(a []string) (string, error) {
			return strings.Join(a[1:], " "), nil
		}, nil),
		mconsoleVerb(env, &cobra.Command{
			Use:   "freeze NAME",
			Short: "Freeze a guest: it runs no code until thawed",
			Long: `Freezes guest NAME (mconsole stop): the whole virtual machine stops where it is,
its clock too, until umlctl thaw NAME. systemctl stop thaws it first, so that it
still shuts down cleanly.`,
			Args: args(cobra.ExactArgs(1)),
		}, func([]string) (string, error) { return "stop", nil },
			func(name string) string {
				return fmt.Sprintf("Froze guest %s; umlctl thaw %s lets it run again.", name, name)
			}),
		mconsoleVerb(env, &cobra.Command{
			Use:   "thaw NAME",
			Short: "Let a frozen guest run again",
			Long:  `Lets guest NAME, frozen by umlctl freeze, run again (mconsole go).`,
			Args:  args(cobra.ExactArgs(1)),
		}, func([]string) (string, error) { return "go", nil },
			func(name string) string { return fmt.Sprintf("Thawed guest %s; it runs again.", name) }),
	}
}

// mconsoleVerb completes c: command makes the mconsole command from the
// arguments, done (if not nil) says what was done instead of the kernel's
// reply.
func mconsoleVerb(env *Env, c *cobra.Command, command func(args []string) (string, error), done func(name string) string) *cobra.Command {
	timeout := c.Flags().Duration("timeout", defaultTimeout, "how long to wait for the kernel's answer")
	c.Flags().SetInterspersed(false) // a raw command's words are not flags
	c.RunE = func(c *cobra.Command, a []string) error {
		if *timeout <= 0 {
			return exitErrorf(ExitUsage, "--timeout must be positive; see %s --help", c.CommandPath())
		}
		name := a[0]
		cmd, err := command(a)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(c.Context(), *timeout)
		defer cancel()
		client, err := dialGuest(ctx, env, name)
		if err != nil {
			return err
		}
		defer client.Close()
		reply, err := client.Mconsole(ctx, cmd)
		if err != nil {
			return guestError(name, cmd, *timeout, err)
		}
		switch {
		case done != nil:
			fmt.Fprintln(env.Stdout, done(name))
		case strings.TrimSpace(reply) != "":
			// The kernel's answer is the guest's text.
			fmt.Fprintln(env.Stdout, printable.Text(strings.TrimRight(reply, "\n")))
		}
		return nil
	}
	return c
}
