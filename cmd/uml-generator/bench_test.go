package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"umlsd/internal/parallel"
)

// BenchmarkGenerator runs the real binary, as systemd would at boot, on
// 1000 and 10000 configurations in a tmpfs, and reports wall time per run
// and the peak RSS of any run. Budget: 1000 configurations in under 10 ms
// and 10 MB.
//
//	go test -run '^$' -bench Generator ./cmd/uml-generator
func BenchmarkGenerator(b *testing.B) {
	if os.Getuid() != 0 {
		b.Skip("needs root: the configurations must be owned by root")
	}
	bin := filepath.Join(b.TempDir(), "uml-generator")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		b.Fatalf("building uml-generator: %v\n%s", err, out)
	}
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("configs=%d", n), func(b *testing.B) {
			base := tmpfsDir(b)
			conf := filepath.Join(base, "etc")
			writeConfigs(b, conf, n)
			var maxRSS int64
			var elapsed time.Duration
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				out := filepath.Join(base, fmt.Sprintf("out%d", i))
				if err := os.Mkdir(out, 0o755); err != nil {
					b.Fatal(err)
				}
				cmd := exec.Command(bin, out, out, out)
				cmd.Env = []string{"UMLSD_CONFIG_DIR=" + conf, "SYSTEMD_LOG_LEVEL=warning"}
				start := time.Now()
				output, err := cmd.CombinedOutput()
				elapsed += time.Since(start)
				if err != nil {
					b.Fatalf("uml-generator: %v\n%s", err, output)
				}
				maxRSS = max(maxRSS, cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss)
				b.StopTimer()
				if err := os.RemoveAll(out); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(elapsed.Microseconds())/float64(b.N)/1000, "ms/run")
			b.ReportMetric(float64(maxRSS)/1024, "peak-RSS-MB")
		})
	}
}

// BenchmarkKernelFloor does only the file system work the generator must
// do for the same guests — read each configuration; make its drop-in
// directory; create, write and close the drop-in; link it into a .wants
// directory — on every core, with no parsing or rendering. The generator
// cannot be faster than this on the machine at hand.
func BenchmarkKernelFloor(b *testing.B) {
	const n = 1000
	base := tmpfsDir(b)
	conf := filepath.Join(base, "etc")
	writeConfigs(b, conf, n)
	dropIn := make([]byte, 700) // about the size of a generated drop-in
	for i := 0; b.Loop(); i++ {
		out := filepath.Join(base, fmt.Sprintf("out%d", i))
		if err := os.MkdirAll(filepath.Join(out, "multi-user.target.wants"), 0o755); err != nil {
			b.Fatal(err)
		}
		dir, err := unix.Open(out, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		var failed atomic.Bool
		parallel.Each(n, func(g int) {
			name := fmt.Sprintf("g%05d", g)
			if err := floorGuest(dir, filepath.Join(conf, name+".conf"), name, dropIn); err != nil {
				failed.Store(true)
			}
		})
		unix.Close(dir)
		if failed.Load() {
			b.Fatal("a file system call failed")
		}
		b.StopTimer()
		if err := os.RemoveAll(out); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/run")
}

func floorGuest(dir int, conf, name string, dropIn []byte) error {
	buf := make([]byte, 4096)
	fd, err := unix.Open(conf, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	var st unix.Stat_t
	err = errors.Join(unix.Fstat(fd, &st), readErr(unix.Read(fd, buf)), unix.Close(fd))
	if err != nil {
		return err
	}
	d := "uml@" + name + ".service.d"
	if err := unix.Mkdirat(dir, d, 0o755); err != nil {
		return err
	}
	out, err := unix.Openat(dir, d+"/10-umlsd.conf", unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return err
	}
	if err := errors.Join(readErr(unix.Write(out, dropIn)), unix.Close(out)); err != nil {
		return err
	}
	return unix.Symlinkat("/lib/systemd/system/uml@.service", dir, "multi-user.target.wants/uml@"+name+".service")
}

func readErr(_ int, err error) error { return err }

// tmpfsDir returns a fresh directory in a tmpfs, so that the disk does not
// dominate the figures.
func tmpfsDir(b *testing.B) string {
	b.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "umlsd-bench-")
	if err != nil {
		b.Skipf("no tmpfs at /dev/shm: %v", err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil || st.Type != 0x01021994 { // TMPFS_MAGIC
		b.Skipf("/dev/shm is not a tmpfs")
	}
	return dir
}

// writeConfigs writes n guests like the DNS bastion of uml.conf(5)
// (config/testdata/dns.conf), each with its own address, and every tenth
// with a drop-in.
func writeConfigs(b *testing.B, dir string, n int) {
	b.Helper()
	example, err := os.ReadFile("../../config/testdata/dns.conf")
	if err != nil {
		b.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	for i := range n {
		name := fmt.Sprintf("g%05d", i)
		conf := strings.Replace(string(example), "Address=10.1.1.10", fmt.Sprintf("Address=10.%d.%d.%d", 1+i/65536, i/256%256, i%256), 1)
		if err := os.WriteFile(filepath.Join(dir, name+".conf"), []byte(conf), 0o644); err != nil {
			b.Fatal(err)
		}
		if i%10 == 0 {
			d := filepath.Join(dir, name+".conf.d")
			if err := os.Mkdir(d, 0o755); err != nil {
				b.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(d, "memory.conf"), []byte("[Guest]\nMemory=512M\n"), 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
}
