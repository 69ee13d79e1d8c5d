package supervisor

import (
	"testing"
)

// A guest chooses its host name, which is in the version the status shows,
// and what it writes to /proc/mconsole: none of it may add a line, and so a
// setting, to what systemd receives from the supervisor.
func TestStatusIsOneLine(t *testing.T) {
	var got []string
	s := &Supervisor{Notify: func(state string) { got = append(got, state) }}
	s.status("running: %s", "Linux evil\nMAINPID=1\r\x7f 6.1 #1")
	want := `STATUS=running: Linux evil\nMAINPID=1\r\x7f 6.1 #1`
	if len(got) != 1 || got[0] != want {
		t.Errorf("status sent %q, want [%q]", got, want)
	}
}
