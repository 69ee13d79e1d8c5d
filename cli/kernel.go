package cli

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"umlsd/control"
	"umlsd/internal/printable"
)

// hostKernel asks the supervisor of a guest over its control socket under
// runtimeDir, and through it the kernel's management console.
func hostKernel(runtimeDir string) func(context.Context, string) (kernelInfo, error) {
	return func(ctx context.Context, name string) (kernelInfo, error) {
		c, err := control.Dial(ctx, runtimeDir, name)
		if errors.Is(err, control.ErrNotRunning) {
			return kernelInfo{}, errNotRunning
		}
		if err != nil {
			return kernelInfo{}, guestError(name, "", 0, err)
		}
		defer c.Close()
		st, err := c.Status(ctx)
		if err != nil {
			return kernelInfo{}, guestError(name, "", 0, err)
		}
		k := kernelInfo{PID: st.KernelPID, Boots: st.Boots, Ready: st.Ready, Frozen: st.Frozen, FrozenUnknown: st.FrozenUnknown}
		if st.KernelPID == 0 {
			return k, nil // not started yet
		}
		v, err := c.Mconsole(ctx, "version")
		if err != nil {
			k.Problem = guestError(name, "version", 0, err).Error()
			return k, nil
		}
		k.Version = strings.TrimSpace(v)
		// A frozen kernel answers mconsole but runs no code: it cannot
		// read its /proc.
		if !st.Frozen {
			if up, err := c.Mconsole(ctx, "proc uptime"); err == nil {
				k.Uptime, _ = parseUptime(up)
			}
		}
		return k, nil
	}
}

// parseUptime reads /proc/uptime's first field, in seconds; the guest
// writes it, so anything but a plausible number is refused.
func parseUptime(s string) (float64, error) {
	f := strings.Fields(s)
	if len(f) == 0 {
		return 0, fmt.Errorf("reading the guest's uptime: empty /proc/uptime")
	}
	up, err := strconv.ParseFloat(f[0], 64)
	if err != nil || math.IsNaN(up) || up < 0 || up > maxUptime {
		return 0, fmt.Errorf("reading the guest's uptime: %q is not a number of seconds", printable.Line(f[0]))
	}
	return up, nil
}

// maxUptime is a century, beyond any real guest's uptime.
const maxUptime = 100 * 365 * 24 * 3600
