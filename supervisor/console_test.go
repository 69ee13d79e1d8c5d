package supervisor

import (
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/google/go-cmp/cmp"
)

// recordLog keeps console lines.
type recordLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *recordLog) Event(journal.Priority, string) {}
func (l *recordLog) Console(line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, line)
}

func TestReadConsole(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	log := &recordLog{}
	matched := make(chan struct{})
	done := make(chan struct{})
	go func() {
		readConsole(r, log, regexp.MustCompile(`^login: ?$`), matched)
		close(done)
	}()
	long := strings.Repeat("x", maxConsoleLine+10)
	// A terminal ends lines with \r\n; a prompt has no line end at all.
	if _, err := w.WriteString("Linux version 6.1\r\nlogin matched? no\n" + long + "\nlogin: "); err != nil {
		t.Fatal(err)
	}
	select {
	case <-matched:
	case <-time.After(5 * time.Second):
		t.Fatal("the prompt was not matched")
	}
	w.Close()
	<-done
	want := []string{"Linux version 6.1", "login matched? no", long[:maxConsoleLine], long[maxConsoleLine:], "login: "}
	if diff := cmp.Diff(want, log.lines); diff != "" {
		t.Errorf("console lines (-want +got):\n%s", diff)
	}
}
