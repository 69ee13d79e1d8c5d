package e2e

import (
	"flag"
	"strings"
	"testing"
	"time"
)

var boots = flag.Int("boots", 200, "how many starts TestEveryBootGetsItsMemory makes")

// TestEveryBootGetsItsMemory starts and stops a small guest (Memory=48M)
// on umlsd's kernel -boots times under the supervisor: every boot reaches
// userspace, and every boot has the same memory. (With the kernel's
// address space randomised, about 1.5% of such boots failed, and the
// memory a guest got varied by up to 16 MiB.)
func TestEveryBootGetsItsMemory(t *testing.T) {
	m := bootWithGuests(t, map[string]string{
		"s": guestConf("guest.img", "Memory=48M\n"+readyConsole, ""),
	})
	const unit = "uml@s.service"
	start := time.Now()
	for i := range *boots {
		// Every start counts against the unit's start limit, while the
		// unit stays loaded (an error: it was not).
		_, _, _ = m.Run(t.Context(), "systemctl", "reset-failed", unit)
		if _, stderr, err := m.Run(t.Context(), "systemctl", "start", unit); err != nil {
			t.Fatalf("start %d of %d failed: %v\n%s\n%s", i+1, *boots, err, stderr, journal(t, m, "-u", unit, "-n", "40"))
		}
		m.MustRun(t, "systemctl", "stop", unit)
	}
	t.Logf("%d starts and stops in %v", *boots, time.Since(start).Round(time.Second))
	got := consoleValues(t, m, unit, "MEMTOTAL")
	if len(got) != *boots {
		t.Fatalf("MemTotal of %d boots, want %d", len(got), *boots)
	}
	count := map[string]int{}
	for _, v := range got {
		count[v]++
	}
	if len(count) != 1 {
		t.Errorf("the guest's MemTotal differed between boots (value: boots): %v", count)
	}
	if j := journal(t, m, "-u", unit); strings.Contains(j, "panic") || strings.Contains(j, "deadlocked") {
		t.Errorf("a boot panicked:\n%s", logLine(j, "panic"))
	}
}
