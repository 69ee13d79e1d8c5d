package e2e

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"umlsd/internal/testbed"
)

// TestTemplateHardeningLetsUMLBoot boots a real UML kernel in a transient
// unit with exactly the hardening settings of uml@.service, so that a
// setting UML does not tolerate fails here and not on an administrator's
// host.
func TestTemplateHardeningLetsUMLBoot(t *testing.T) {
	testbed.RequireRoot(t)
	testbed.RequireCommands(t, "systemd-nspawn", "linux.uml", "mke2fs", "busybox")
	props := hardening(t, "../units/uml@.service")
	if len(props) < 5 {
		t.Fatalf("found only %q in the template's hardening block", props)
	}

	// Not under /tmp or /var/tmp: PrivateTmp= hides those from the unit.
	const dir = "/var/lib/umlsd-hardening-test"
	m := testbed.Boot(t.Context(), t, testbed.Options{
		Files: map[string][]byte{dir + "/rootfs.img": guestImage(t)},
	})
	args := []string{"systemd-run", "--wait", "--pipe", "--quiet", "--collect",
		"--unit=uml-hardening-test", "-p", "Environment=TMPDIR=" + dir}
	for _, p := range props {
		args = append(args, "-p", p)
	}
	args = append(args, "/usr/bin/linux.uml",
		"ubd0="+dir+"/root.cow,"+dir+"/rootfs.img", "root=/dev/ubda", "mem=64M",
		"con=null", "ssl=null", "con0=fd:0,fd:1", "umid=hardening", "uml_dir="+dir)
	stdout, stderr, err := m.Run(t.Context(), args...)
	if err != nil || !strings.Contains(stdout, "UMLSD-GUEST-UP") {
		t.Fatalf("UML did not boot and power off under %q: %v\nstdout:\n%s\nstderr:\n%s", props, err, stdout, stderr)
	}
}

// hardening returns the settings of the template's hardening block: the
// assignments after the comment that starts with "# Hardening", up to the
// next blank line.
func hardening(t *testing.T, template string) []string {
	t.Helper()
	f, err := os.Open(template)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var props []string
	in := false
	for s := bufio.NewScanner(f); s.Scan(); {
		line := strings.TrimSpace(s.Text())
		switch {
		case strings.HasPrefix(line, "# Hardening"):
			in = true
		case in && line == "":
			return props
		case in && !strings.HasPrefix(line, "#"):
			props = append(props, line)
		}
	}
	return props
}

// guestImage builds a root filesystem whose init says it is up and powers
// the guest off.
func guestImage(t *testing.T) []byte {
	t.Helper()
	root := filepath.Join(t.TempDir(), "root")
	for _, d := range []string{"bin", "sbin", "proc", "dev"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(busybox)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin/busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	init := "#!/bin/busybox sh\n/bin/busybox mount -t proc proc /proc\necho UMLSD-GUEST-UP\nexec /bin/busybox poweroff -f\n"
	if err := os.WriteFile(filepath.Join(root, "sbin/init"), []byte(init), 0o755); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "rootfs.img")
	if out, err := exec.Command("mke2fs", "-q", "-t", "ext4", "-d", root, img, "16M").CombinedOutput(); err != nil {
		t.Fatalf("mke2fs: %v\n%s", err, out)
	}
	data, err = os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
