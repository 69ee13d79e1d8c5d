package testbed

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// lockHolderEnv makes the test binary a stand-in for a UML kernel: it
// takes the process-associated fcntl locks the kernel takes on the files
// named in it ("w:PATH" write-locked, "r:PATH" read-locked,
// comma-separated), says "locked" and holds them until its standard input
// closes.
const lockHolderEnv = "UMLSD_TESTBED_HOLD_LOCKS"

// RunLockHolder makes this process the lock holder HoldLocks started, if
// it is one: it holds the locks until HoldLocks's test ends and returns
// true, and TestMain must then return at once. Otherwise it returns false.
// A package that uses HoldLocks calls it first in its TestMain:
//
//	func TestMain(m *testing.M) {
//		if testbed.RunLockHolder() {
//			return
//		}
//		os.Exit(m.Run())
//	}
func RunLockHolder() bool {
	spec := os.Getenv(lockHolderEnv)
	if spec == "" {
		return false
	}
	if err := holdLocks(spec); err != nil {
		fmt.Fprintf(os.Stderr, "lock holder: %v\n", err)
		os.Exit(1)
	}
	return true
}

func holdLocks(spec string) error {
	for _, s := range strings.Split(spec, ",") {
		mode, path, _ := strings.Cut(s, ":")
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return err
		}
		lk := unix.Flock_t{Type: unix.F_RDLCK, Whence: io.SeekStart}
		if mode == "w" {
			lk.Type = unix.F_WRLCK
		}
		if err := unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk); err != nil {
			return fmt.Errorf("locking %s: %w", path, err)
		}
	}
	fmt.Println("locked")
	_, err := io.Copy(io.Discard, os.Stdin)
	return err
}

// HoldLocks starts a process that locks files as a UML kernel does, with
// process-associated fcntl locks, and returns its pid once it holds them;
// it ends with the test. spec names the files: "w:PATH" to write-lock,
// "r:PATH" to read-lock, comma-separated. The process is the test binary,
// whose TestMain must call RunLockHolder first.
func HoldLocks(t testing.TB, spec string) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), lockHolderEnv+"="+spec)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Wait()
	})
	if line, err := bufio.NewReader(stdout).ReadString('\n'); line != "locked\n" {
		t.Fatalf("the lock holder said %q (%v); does the package's TestMain call testbed.RunLockHolder?", line, err)
	}
	return cmd.Process.Pid
}
