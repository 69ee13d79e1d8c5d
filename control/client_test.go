package control

import (
	"testing"
	"time"
)

// TestClientWait: a client without a deadline waits for an mconsole
// command at least as long as the server waits for the kernel.
func TestClientWait(t *testing.T) {
	for _, tt := range []struct {
		name   string
		req    request
		server time.Duration // how long the server works on it, at most
		want   time.Duration
	}{
		{"status", request{Op: opStatus}, requestTimeout, 2 * requestTimeout},
		{"attach", request{Op: opAttach}, requestTimeout, 2 * requestTimeout},
		{"mconsole, no timeout", request{Op: opMconsole, Command: "version"}, defaultCommandTimeout, defaultCommandTimeout + requestTimeout},
		{"mconsole, 2 s", request{Op: opMconsole, Command: "version", Timeout: 2000}, 2 * time.Second, 2*time.Second + requestTimeout},
		{"mconsole, an hour", request{Op: opMconsole, Command: "version", Timeout: 3600_000}, maxCommandTimeout, maxCommandTimeout + requestTimeout},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.req.wait()
			if got != tt.want {
				t.Errorf("wait %v, want %v", got, tt.want)
			}
			if got <= tt.server {
				t.Errorf("the client waits %v, no longer than the server may work on the request (%v)", got, tt.server)
			}
		})
	}
}
