package supervisor

import (
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/coreos/go-systemd/v22/journal"
)

// Log is where the supervisor writes its own events and the guest's
// console lines.
type Log interface {
	Event(p journal.Priority, msg string)
	Console(line string)
}

// GuestField is the journal field that names the guest on every entry the
// supervisor writes: journalctl UML_GUEST=NAME.
const GuestField = "UML_GUEST"

// JournalLog writes to the journal natively, so that each entry carries the
// guest's name in GuestField and its priority. Console lines are logged
// under uml@NAME (not NAME: a guest named sshd would otherwise write lines
// that look like the host's sshd), events under uml-supervisor.
type JournalLog struct {
	Guest string
}

func (l JournalLog) Event(p journal.Priority, msg string) {
	l.send(msg, p, "uml-supervisor")
}

func (l JournalLog) Console(line string) {
	l.send(line, journal.PriInfo, "uml@"+l.Guest)
}

func (l JournalLog) send(msg string, p journal.Priority, ident string) {
	// A lost line is better than a stalled guest: the journal's errors are
	// not the guest's.
	_ = journal.Send(msg, p, map[string]string{GuestField: l.Guest, "SYSLOG_IDENTIFIER": ident})
}

// TextLog writes plain lines, for a supervisor run by hand: events to one
// writer with their level, console lines to another as they are.
type TextLog struct {
	mu             sync.Mutex
	Events, Output io.Writer
}

func (l *TextLog) Event(p journal.Priority, msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	levels := [...]string{"emergency", "alert", "critical", "error", "warning", "notice", "info", "debug"}
	level := "info"
	if int(p) >= 0 && int(p) < len(levels) {
		level = levels[p]
	}
	fmt.Fprintf(l.Events, "uml-supervisor: %s: %s\n", level, msg)
}

func (l *TextLog) Console(line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintln(l.Output, strings.TrimRight(line, "\n"))
}
