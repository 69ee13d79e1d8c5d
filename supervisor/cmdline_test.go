package supervisor

import (
	"path/filepath"
	"strings"
	"testing"

	"umlsd/config"
	"umlsd/internal/golden"
)

// parseGuest parses one configuration given as text.
func parseGuest(t *testing.T, name, text string) *config.Guest {
	t.Helper()
	g, err := config.Parse(name, config.Source{Path: "/etc/uml/" + name + ".conf", Data: []byte(text)})
	if err != nil {
		t.Fatalf("parsing %s: %v", name, err)
	}
	return g
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
		{"network", "[Guest]\nRootImage=/srv/base.img\nKernelArguments=quiet\n[Network]\nBridge=br0\nMAC=52:54:00:12:34:56\nAddress=10.1.1.10\n"},
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
	golden.Check(t, filepath.Join("testdata", "cmdline.golden"), b.String())
}
