package control

import (
	"bytes"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fakeTerminal records what the hub passes to the console.
type fakeTerminal struct {
	mu    sync.Mutex
	input bytes.Buffer
	sizes [][2]uint16
	wrote chan struct{}
}

func newFakeTerminal() *fakeTerminal { return &fakeTerminal{wrote: make(chan struct{}, 100)} }

func (f *fakeTerminal) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.input.Write(p)
	select {
	case f.wrote <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (f *fakeTerminal) SetSize(rows, cols uint16) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sizes = append(f.sizes, [2]uint16{rows, cols})
	select {
	case f.wrote <- struct{}{}:
	default:
	}
	return nil
}

func (f *fakeTerminal) got() (string, [][2]uint16) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.input.String(), append([][2]uint16(nil), f.sizes...)
}

func TestHubReplay(t *testing.T) {
	line := strings.Repeat("x", 99) + "\n" // 100 bytes
	for _, tt := range []struct {
		name   string
		writes []string
		want   string
	}{
		{"nothing yet", nil, ""},
		{"all of it while it fits", []string{"half a li", "ne\nprompt# "}, "half a line\nprompt# "},
		{"full, not wrapped", []string{strings.Repeat(line, ReplaySize/100), strings.Repeat("1", ReplaySize%100)}, strings.Repeat(line, ReplaySize/100) + strings.Repeat("1", ReplaySize%100)},
		{
			"wrapped: from the first whole line",
			[]string{"garbage\n", strings.Repeat(line, ReplaySize/100+1), "tail"},
			strings.Repeat(line, ReplaySize/100) + "tail",
		},
		{
			"wrapped without a line end: as it is",
			[]string{strings.Repeat("y", ReplaySize+10)},
			strings.Repeat("y", ReplaySize),
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := NewHub(newFakeTerminal())
			for _, w := range tt.writes {
				h.Write([]byte(w))
			}
			s, err := h.Attach(false)
			if err != nil {
				t.Fatal(err)
			}
			if got := string(s.Take()); got != tt.want {
				t.Errorf("replay of %d bytes, want %d; differs at the start: %q…, want %q…", len(got), len(tt.want), got[:min(20, len(got))], tt.want[:min(20, len(tt.want))])
			}
		})
	}
}

func TestHubSessions(t *testing.T) {
	term := newFakeTerminal()
	h := NewHub(term)
	h.Write([]byte("boot\n"))
	a, err := h.Attach(false)
	if err != nil {
		t.Fatal(err)
	}
	h.Write([]byte("live"))
	if got := string(a.Take()); got != "boot\nlive" {
		t.Errorf("first session got %q, want the replay then the live output", got)
	}
	if !h.Attached() {
		t.Error("Attached() is false with a session")
	}
	if _, err := h.Attach(false); err != ErrBusy {
		t.Errorf("a second attach without force: %v, want ErrBusy", err)
	}
	if err := a.Input([]byte("ls\r")); err != nil {
		t.Fatal(err)
	}
	if err := a.Resize(24, 80); err != nil {
		t.Fatal(err)
	}

	b, err := h.Attach(true)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.Done():
	default:
		t.Fatal("the first session did not end when the second took over")
	}
	if a.Reason() != reasonTakenOver {
		t.Errorf("first session ended with %q, want %q", a.Reason(), reasonTakenOver)
	}
	if err := a.Input([]byte("late")); err != errDetached {
		t.Errorf("input of a session taken over: %v, want errDetached", err)
	}
	if err := a.Resize(1, 1); err != errDetached {
		t.Errorf("resize by a session taken over: %v, want errDetached", err)
	}
	b.Input([]byte("pwd\r"))
	h.Write([]byte("more\n"))
	if got := string(b.Take()); got != "boot\nlive"+"more\n" {
		t.Errorf("second session got %q", got)
	}
	if got := string(a.Take()); got != "" {
		t.Errorf("the first session still got output %q after it was taken over", got)
	}

	b.Detach()
	if h.Attached() {
		t.Error("Attached() after the session detached")
	}
	c, err := h.Attach(false)
	if err != nil {
		t.Fatalf("attach after a detach: %v", err)
	}
	h.Close("the guest's kernel exited")
	if c.Reason() != "the guest's kernel exited" {
		t.Errorf("session ended with %q at the console's end", c.Reason())
	}
	if _, err := h.Attach(true); err != ErrNotRunning {
		t.Errorf("attach after the console ended: %v, want ErrNotRunning", err)
	}
	input, sizes := term.got()
	if input != "ls\rpwd\r" {
		t.Errorf("console input %q, want the attached sessions' input only", input)
	}
	if diff := cmp.Diff([][2]uint16{{24, 80}}, sizes); diff != "" {
		t.Errorf("window sizes (-want +got):\n%s", diff)
	}
}

// TestHubSlowSession: output never waits for a session; one that lets too
// much pile up is dropped, and told why.
func TestHubSlowSession(t *testing.T) {
	h := NewHub(newFakeTerminal())
	s, err := h.Attach(false)
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte("z"), 4096)
	for i := 0; i < 2*maxPending/len(chunk); i++ {
		h.Write(chunk)
	}
	select {
	case <-s.Done():
	default:
		t.Fatal("a session with 2 MiB unread is still attached")
	}
	if s.Reason() != reasonTooSlow {
		t.Errorf("reason %q, want %q", s.Reason(), reasonTooSlow)
	}
	if h.Attached() {
		t.Error("the slow session is still the attached one")
	}
}

// TestHubRing: the ring keeps the last ReplaySize bytes of output, in
// order, through writes of every size that wrap it around many times.
func TestHubRing(t *testing.T) {
	for _, tt := range []struct {
		name  string
		sizes []int // written in turn, again and again
	}{
		{"small", []int{1, 7, 100, 4095}},
		{"ring-sized", []int{ReplaySize - 1, 3, ReplaySize, 5, ReplaySize + 1}},
		{"large", []int{3*ReplaySize + 17, 2}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := NewHub(newFakeTerminal())
			var all []byte
			next := byte(0)
			for i := 0; len(all) < 5*ReplaySize; i++ {
				p := make([]byte, tt.sizes[i%len(tt.sizes)])
				for j := range p {
					// No line ends: the replay is the ring as it is.
					next = next%250 + 1
					if next == '\n' {
						next++
					}
					p[j] = next
				}
				h.Write(p)
				all = append(all, p...)
				h.mu.Lock()
				got := h.replay()
				h.mu.Unlock()
				want := all[max(0, len(all)-ReplaySize):]
				if !bytes.Equal(got, want) {
					t.Fatalf("after %d bytes, the ring holds %d bytes, want the last %d", len(all), len(got), len(want))
				}
			}
		})
	}
}

func BenchmarkHubWrite(b *testing.B) {
	h := NewHub(newFakeTerminal())
	line := []byte(strings.Repeat("x", 79) + "\n")
	b.SetBytes(int64(len(line)))
	for b.Loop() {
		h.Write(line)
	}
}
