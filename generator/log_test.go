package generator

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseLevel(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
		ok   bool
	}{
		{"debug", LevelDebug, true},
		{"info", LevelInfo, true},
		{"warning", LevelWarning, true},
		{"err", LevelErr, true},
		{"0", 0, true},
		{"7", LevelDebug, true},
		{"8", 0, false},
		{"", 0, false},
		{"verbose", 0, false},
	} {
		got, ok := ParseLevel(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParseLevel(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestLoggerWritesKmsgAndStderr(t *testing.T) {
	var kmsg, stderr bytes.Buffer
	l := NewLogger("uml-generator", 42, LevelWarning, &kmsg, &stderr)
	l.Error("dns.conf:3: bad")
	l.Warning("notes.txt: ignored")
	l.Debug("not shown at level warning")

	// <27> and <28>: LOG_DAEMON with err and warning.
	wantKmsg := "<27>uml-generator[42]: dns.conf:3: bad\n<28>uml-generator[42]: notes.txt: ignored\n"
	if diff := cmp.Diff(wantKmsg, kmsg.String()); diff != "" {
		t.Errorf("kmsg (-want +got):\n%s", diff)
	}
	wantStderr := "uml-generator: dns.conf:3: bad\numl-generator: notes.txt: ignored\n"
	if diff := cmp.Diff(wantStderr, stderr.String()); diff != "" {
		t.Errorf("stderr (-want +got):\n%s", diff)
	}
}

// TestOpenKmsgNeverCreates: in a container /dev/kmsg does not exist, and a
// regular file must not appear in its place.
func TestOpenKmsgNeverCreates(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "kmsg")
	if f := OpenKmsg(missing); f != nil {
		f.Close()
		t.Fatal("OpenKmsg returned a file for a missing path")
	}
	if _, err := os.Lstat(missing); !os.IsNotExist(err) {
		t.Fatalf("OpenKmsg created %s (Lstat: %v)", missing, err)
	}

	regular := filepath.Join(dir, "regular")
	if err := os.WriteFile(regular, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if f := OpenKmsg(regular); f != nil {
		f.Close()
		t.Error("OpenKmsg accepted a regular file; only the character device is the kernel log")
	}
}

// TestLoggerRecords: every line is a record of its own (a record with a
// newline would be cut by the kernel), and none exceeds what /dev/kmsg
// accepts in one write.
func TestLoggerRecords(t *testing.T) {
	var kmsg, stderr bytes.Buffer
	l := NewLogger("uml-generator", 7, LevelDebug, &kmsg, &stderr)
	l.Error("first\nsecond\n")
	l.Error(strings.Repeat("x", 2000))
	lines := strings.Split(strings.TrimSuffix(kmsg.String(), "\n"), "\n")
	if len(lines) != 3 || lines[0] != "<27>uml-generator[7]: first" || lines[1] != "<27>uml-generator[7]: second" {
		t.Fatalf("kmsg records:\n%s", kmsg.String())
	}
	if n := len(lines[2]) + 1; n > maxRecord || !strings.HasSuffix(lines[2], "…") {
		t.Errorf("long record is %d bytes with its newline (limit %d), ends %q", n, maxRecord, lines[2][len(lines[2])-10:])
	}
	if want := "uml-generator: first\numl-generator: second\numl-generator: " + strings.Repeat("x", 2000) + "\n"; stderr.String() != want {
		t.Errorf("stderr keeps every line whole; got %d bytes", stderr.Len())
	}
}
