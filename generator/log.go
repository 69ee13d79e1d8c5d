package generator

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Syslog priorities (syslog(3)), the levels of SYSTEMD_LOG_LEVEL.
const (
	LevelErr     = 3
	LevelWarning = 4
	LevelInfo    = 6
	LevelDebug   = 7
)

var levelNames = []string{"emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"}

// ParseLevel parses a SYSTEMD_LOG_LEVEL value: a name or a number 0–7.
func ParseLevel(s string) (int, bool) {
	for i, n := range levelNames {
		if s == n {
			return i, true
		}
	}
	if n, err := strconv.Atoi(s); err == nil && n >= 0 && n < len(levelNames) {
		return n, true
	}
	return 0, false
}

// Logger writes to the kernel log, as generators do (the journal may not
// run yet), and to stderr, for whoever runs the generator by hand.
type Logger struct {
	level  int
	tag    string
	pid    int
	kmsg   io.Writer // nil when there is no kernel log, as in a container
	stderr io.Writer
	mu     sync.Mutex
}

// NewLogger returns a logger that drops messages less important than level.
func NewLogger(tag string, pid, level int, kmsg, stderr io.Writer) *Logger {
	return &Logger{level: level, tag: tag, pid: pid, kmsg: kmsg, stderr: stderr}
}

// OpenKmsg opens /dev/kmsg for writing, or returns nil. It never creates
// the file: in a container there is none, and a regular file there would
// be a bug.
func OpenKmsg(path string) *os.File {
	f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil
	}
	if fi, err := f.Stat(); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		f.Close()
		return nil
	}
	return f
}

func (l *Logger) Error(msg string)   { l.log(LevelErr, msg) }
func (l *Logger) Warning(msg string) { l.log(LevelWarning, msg) }
func (l *Logger) Debug(msg string)   { l.log(LevelDebug, msg) }

// maxRecord is what the kernel accepts in one /dev/kmsg write; a longer
// one is refused whole (EINVAL).
const maxRecord = 1024

// log writes each line of msg as a record of its own.
func (l *Logger) log(prio int, msg string) {
	if prio > l.level {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for line := range strings.SplitSeq(strings.TrimRight(msg, "\n"), "\n") {
		if l.kmsg != nil {
			// LOG_DAEMON, so that the journal files it with other services.
			rec := fmt.Sprintf("<%d>%s[%d]: %s", 3<<3|prio, l.tag, l.pid, line)
			if len(rec) >= maxRecord {
				rec = rec[:maxRecord-len("…")-1] + "…"
			}
			fmt.Fprintln(l.kmsg, rec)
		}
		fmt.Fprintf(l.stderr, "%s: %s\n", l.tag, line)
	}
}
