package supervisor

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"umlsd/config"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// parseGuest parses one configuration given as text.
func parseGuest(t *testing.T, name, text string) *config.Guest {
	t.Helper()
	g, err := config.Parse(name, config.Source{Path: "/etc/uml/" + name + ".conf", Data: []byte(text)})
	if err != nil {
		t.Fatalf("parsing %s: %v", name, err)
	}
	return g
}

// golden compares got with testdata/NAME, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading golden file (run go test -update to create it): %v", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s differs (-want +got; go test -update rewrites it):\n%s", path, diff)
	}
}

func TestKernelCommandLine(t *testing.T) {
	cases := []struct{ name, conf string }{
		{"minimal", "[Guest]\nRootImage=/var/lib/uml/images/base.img\n"},
		{"nocow", "[Guest]\nRootImage=/srv/web.img\nCow=no\nMemory=1G\n"},
		{"disks", `[Guest]
RootImage=/srv/base.img
Cow=/srv/cow/mail.cow
Disk=/srv/mail-spool.img
Disk=/srv/mail-archive.img:ro
Memory=300M
Kernel=/opt/uml/linux
KernelArguments=quiet loglevel=3
KernelArguments=init=/sbin/init
`},
		{"odd-memory", "[Guest]\nRootImage=/srv/base.img\nMemory=100000K\n"},
	}
	var b strings.Builder
	for _, c := range cases {
		g := parseGuest(t, c.name, c.conf)
		b.WriteString("# " + c.name + "\n")
		for _, w := range KernelCommandLine(g, NewLayout(RuntimeDir, g.Name)) {
			b.WriteString(w + "\n")
		}
		b.WriteString("\n")
	}
	golden(t, "cmdline.golden", b.String())
}
