package supervisor

import (
	"bytes"
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
	var raw bytes.Buffer // read only after readConsole returned
	matched := make(chan struct{})
	done := make(chan struct{})
	go func() {
		readConsole(r, &raw, log, regexp.MustCompile(`^login: ?$`), matched)
		close(done)
	}()
	long := strings.Repeat("x", maxConsoleLine+10)
	// A terminal ends lines with \r\n; a prompt has no line end at all.
	written := "Linux version 6.1\r\nlogin matched? no\n" + long + "\nlogin: "
	if _, err := w.WriteString(written); err != nil {
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
	if raw.String() != written {
		t.Errorf("the console's raw output differs from what was written:\n%q\nwant\n%q", raw.String(), written)
	}
}
