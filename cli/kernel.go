package cli

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"umlsd/control"
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
		k := kernelInfo{PID: st.KernelPID, Boots: st.Boots, Ready: st.Ready, Frozen: st.Frozen}
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

// parseUptime reads /proc/uptime's first field, in seconds.
func parseUptime(s string) (float64, error) {
	f := strings.Fields(s)
	if len(f) == 0 {
		return 0, fmt.Errorf("reading the guest's uptime: empty /proc/uptime")
	}
	return strconv.ParseFloat(f[0], 64)
}
