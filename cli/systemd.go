package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
)

// systemd is what umlctl asks of the service manager: an interface so that
// the commands' output can be tested without one.
type systemd interface {
	// Unit reads a unit's state; systemd loads the unit to answer.
	Unit(ctx context.Context, unit string) (unitState, error)
	// Job starts, stops or restarts a unit and, if wait, waits for the
	// job's result: "done", or "failed", "timeout", "canceled",
	// "dependency", "skipped".
	Job(ctx context.Context, verb, unit string, wait bool) (string, error)
	Close()
}

// unitState is the part of a guest's unit umlctl shows.
type unitState struct {
	LoadState   string // loaded, not-found, …
	ActiveState string // active, inactive, failed, activating, deactivating
	SubState    string
	// ActiveSince is when the unit became active: for uml@.service
	// (Type=notify), when the guest became ready. Zero if not active.
	ActiveSince time.Time
	// StatusText is the supervisor's last STATUS=: while starting, the
	// phase; after a failure, the reason.
	StatusText       string
	Result           string // success, exit-code, watchdog, …
	ExecMainStatus   int
	MainPID          int
	NeedDaemonReload bool
}

// State is the unit's state as systemctl prints it: "active (running)".
func (u unitState) State() string {
	if u.ActiveState == "" {
		return "unknown"
	}
	if u.SubState == "" || u.SubState == u.ActiveState {
		return u.ActiveState
	}
	return u.ActiveState + " (" + u.SubState + ")"
}

// Running reports whether the unit has a guest: starting, running or
// stopping.
func (u unitState) Running() bool {
	switch u.ActiveState {
	case "active", "activating", "deactivating", "reloading":
		return true
	}
	return false
}

// busSystemd is systemd over D-Bus.
type busSystemd struct{ conn *sddbus.Conn }

// dialSystemd connects to systemd: directly on its private socket as root,
// as systemctl does, so that no D-Bus daemon is needed; through the system
// bus otherwise.
func dialSystemd(ctx context.Context) (systemd, error) {
	dial := sddbus.NewSystemConnectionContext
	if os.Geteuid() == 0 {
		dial = sddbus.NewSystemdConnectionContext
	}
	conn, err := dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("connecting to systemd: %w; is systemd running?", err)
	}
	return busSystemd{conn}, nil
}

func (s busSystemd) Close() { s.conn.Close() }

func (s busSystemd) Unit(ctx context.Context, unit string) (unitState, error) {
	props, err := s.conn.GetAllPropertiesContext(ctx, unit)
	if err != nil {
		return unitState{}, fmt.Errorf("reading the state of %s: %w", unit, busError(err))
	}
	u := unitState{
		LoadState:        prop[string](props, "LoadState"),
		ActiveState:      prop[string](props, "ActiveState"),
		SubState:         prop[string](props, "SubState"),
		StatusText:       prop[string](props, "StatusText"),
		Result:           prop[string](props, "Result"),
		ExecMainStatus:   int(prop[int32](props, "ExecMainStatus")),
		MainPID:          int(prop[uint32](props, "MainPID")),
		NeedDaemonReload: prop[bool](props, "NeedDaemonReload"),
	}
	if u.ActiveState == "active" || u.ActiveState == "reloading" {
		if us := prop[uint64](props, "ActiveEnterTimestamp"); us != 0 {
			u.ActiveSince = time.UnixMicro(int64(us))
		}
	}
	return u, nil
}

// prop is a property of type T, or T's zero value.
func prop[T any](props map[string]any, name string) T {
	v, _ := props[name].(T)
	return v
}

func (s busSystemd) Job(ctx context.Context, verb, unit string, wait bool) (string, error) {
	var queue func(context.Context, string, string, chan<- string) (int, error)
	switch verb {
	case "start":
		queue = s.conn.StartUnitContext
	case "stop":
		queue = s.conn.StopUnitContext
	case "restart":
		queue = s.conn.RestartUnitContext
	default:
		return "", fmt.Errorf("unknown job %q", verb)
	}
	var done chan string
	if wait {
		done = make(chan string, 1)
	}
	if _, err := queue(ctx, unit, "replace", done); err != nil {
		return "", fmt.Errorf("asking systemd to %s %s: %w", verb, unit, busError(err))
	}
	if !wait {
		return "queued", nil
	}
	select {
	case result := <-done:
		return result, nil
	case <-ctx.Done():
		return "", fmt.Errorf("waiting for systemd to %s %s: %w; the job goes on: see systemctl status %s", verb, unit, context.Cause(ctx), unit)
	}
}

// busError makes systemd's D-Bus errors read as sentences: a dbus.Error's
// text is its first body element, without its name.
func busError(err error) error {
	var e dbus.Error
	if !errors.As(err, &e) {
		return err
	}
	switch e.Name {
	case "org.freedesktop.DBus.Error.AccessDenied", "org.freedesktop.systemd1.AccessDenied",
		"org.freedesktop.DBus.Error.InteractiveAuthorizationRequired":
		return fmt.Errorf("permission denied by systemd; run umlctl as root")
	}
	if len(e.Body) > 0 {
		if msg, ok := e.Body[0].(string); ok {
			return errors.New(msg)
		}
	}
	return err
}
