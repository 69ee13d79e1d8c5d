//go:build demo

// Package demo is `make demo`: umlsd installed into a throwaway systemd
// machine (internal/testbed), a demo guest started, shown, and stopped, as
// an administrator would. It is a test only to reuse the test bed, which
// tears the machine down whatever happens; the build tag keeps it out of
// `make test`.
package demo

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"umlsd/guestimage"
	"umlsd/internal/testbed"
)

const config = `# /etc/uml/demo.conf — a guest as an administrator writes it.
[Guest]
Description=umlsd demo guest
RootImage=/var/lib/uml/images/demo.img
Memory=64M
Ready=console:^demo: ready$
`

func TestDemo(t *testing.T) {
	testbed.RequireRoot(t)
	testbed.RequireCommands(t, "systemd-nspawn", "make", "linux.uml", "mke2fs", "busybox")
	say := func(format string, args ...any) { fmt.Printf("\n==> "+format+"\n", args...) }

	say("building a busybox guest image")
	img := filepath.Join(t.TempDir(), "demo.img")
	err := guestimage.Build(t.Context(), img, guestimage.Spec{
		Size:     32 << 20,
		Hostname: "demo",
		Startup:  "echo 'demo: hello from the guest, running as a jailed, unprivileged UML kernel'\necho 'demo: ready'",
		Services: []string{`while :; do echo "demo: up $(cut -d' ' -f1 /proc/uptime)s"; sleep 2; done`},
		Shutdown: "echo 'demo: shutting down cleanly'",
	})
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}

	say("booting a throwaway systemd machine with umlsd installed (make install)")
	m := testbed.Boot(t.Context(), t, testbed.Options{Install: true, Files: map[string][]byte{
		"/var/lib/uml/images/demo.img": data,
		"/etc/uml/demo.conf":           []byte(config),
	}})
	run := func(args ...string) {
		fmt.Printf("\n# %s\n", strings.Join(args, " "))
		stdout, stderr, err := m.Run(t.Context(), args...)
		fmt.Print(stdout, stderr)
		if err != nil {
			fmt.Printf("(exit: %v)\n", err)
		}
	}
	run("cat", "/etc/uml/demo.conf")

	say("starting the guest: systemctl start returns when its console says it is ready")
	start := time.Now()
	run("systemctl", "start", "uml@demo")
	fmt.Printf("(took %v)\n", time.Since(start).Round(time.Millisecond))
	time.Sleep(3 * time.Second)
	run("systemctl", "status", "--no-pager", "-n", "0", "uml@demo")
	run("sh", "-c", "ps -o user,pid,pgid,args -g $(systemctl show -P MainPID uml@demo) | cut -c1-110")
	run("sh", "-c", "k=$(pgrep -o -u uml-demo linux.uml); grep -E '^(Uid|CapEff|CapBnd|NoNewPrivs)' /proc/$k/status; echo \"root: $(readlink /proc/$k/root)\"")

	say("the guest's console and the supervisor's events are in the journal")
	run("journalctl", "--no-pager", "-u", "uml@demo", "-o", "short", "-g", "demo:|uml-supervisor|ready|started")

	say("stopping the guest: it shuts down cleanly, and everything on the host is undone")
	start = time.Now()
	run("systemctl", "stop", "uml@demo")
	fmt.Printf("(took %v)\n", time.Since(start).Round(time.Millisecond))
	run("journalctl", "--no-pager", "-u", "uml@demo", "-o", "cat", "-n", "8")
	run("sh", "-c", "ls -A /run/uml; [ -z \"$(ls -A /run/uml)\" ] && echo '/run/uml is empty'; "+
		"pgrep -a -u uml-demo || echo 'no process of uml-demo'; grep /run/uml/ /proc/self/mountinfo || echo 'no mount of /run/uml'")
	run("ls", "-l", "/var/lib/uml/demo")

	say("tearing the machine down; the host is unchanged")
}
