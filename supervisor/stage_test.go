package supervisor

import (
	"os"
	"regexp"
	"strconv"
	"testing"
)

// TestStageFiles checks that the kernel's command line and the exec
// stage's descriptor table agree on where the tap is.
func TestStageFiles(t *testing.T) {
	var spec, errs, tap *os.File
	for _, f := range []**os.File{&spec, &errs, &tap} {
		var err error
		if *f, err = os.Open(os.DevNull); err != nil {
			t.Fatal(err)
		}
		defer (*f).Close()
	}
	g := parseGuest(t, "web", "[Guest]\nRootImage=/srv/base.img\n[Network]\nBridge=br0\nAddress=10.1.1.10\n")
	var fd int
	for _, w := range KernelCommandLine(g, NewLayout(RuntimeDir, g.Name)) {
		if m := regexp.MustCompile(`^vec0:transport=fd,fd=(\d+),`).FindStringSubmatch(w); m != nil {
			fd, _ = strconv.Atoi(m[1])
		}
	}
	if fd == 0 {
		t.Fatal("the command line names no tap descriptor")
	}
	files := stageFiles(spec, errs, kernelFiles{Tap: tap})
	for want, n := range map[*os.File]int{spec: stageSpecFD, errs: stageErrorFD, tap: fd} {
		if i := n - 3; i < 0 || i >= len(files) || files[i] != want {
			t.Errorf("descriptor %d is not the one for it", n)
		}
	}
	if files := stageFiles(spec, errs, kernelFiles{}); files[kernelTapFD-3] != nil {
		t.Errorf("without a tap, descriptor %d is a file, want closed", kernelTapFD)
	}
}
