package jail

import (
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// readImpliesExec is a personality flag the filter must refuse.
const readImpliesExec = 0x0400000

// runFilter runs a seccomp program of the kinds of instructions
// personalityFilter uses on one system call.
func runFilter(t *testing.T, prog []unix.SockFilter, arch, nr uint32, arg0 uint64) uint32 {
	t.Helper()
	var data [64]byte // struct seccomp_data
	binary.LittleEndian.PutUint32(data[offsetNr:], nr)
	binary.LittleEndian.PutUint32(data[offsetArch:], arch)
	binary.LittleEndian.PutUint64(data[offsetArg0:], arg0)
	var a uint32
	for pc := 0; pc < len(prog); pc++ {
		in := prog[pc]
		switch in.Code {
		case unix.BPF_LD | unix.BPF_W | unix.BPF_ABS:
			a = binary.LittleEndian.Uint32(data[in.K:])
		case unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K:
			if a == in.K {
				pc += int(in.Jt)
			} else {
				pc += int(in.Jf)
			}
		case unix.BPF_RET | unix.BPF_K:
			return in.K
		default:
			t.Fatalf("instruction %d: unknown code %#x", pc, in.Code)
		}
	}
	t.Fatal("the program ran off its end")
	return 0
}

func TestPersonalityFilter(t *testing.T) {
	const persona = AddrNoRandomize
	prog := personalityFilter(persona)
	if len(prog) > 255 {
		t.Fatal("too long for 8-bit jumps")
	}
	allow, deny := uint32(unix.SECCOMP_RET_ALLOW), uint32(unix.SECCOMP_RET_ERRNO)|uint32(unix.EPERM)
	for _, tt := range []struct {
		name     string
		arch, nr uint32
		arg0     uint64
		want     uint32
	}{
		{"x86-64: the locked personality", unix.AUDIT_ARCH_X86_64, personalityX8664, persona, allow},
		{"x86-64: a query", unix.AUDIT_ARCH_X86_64, personalityX8664, queryPersonality, allow},
		{"x86-64: another personality", unix.AUDIT_ARCH_X86_64, personalityX8664, readImpliesExec, deny},
		{"x86-64: the default personality", unix.AUDIT_ARCH_X86_64, personalityX8664, 0, deny},
		{"x86-64: only the low half counts", unix.AUDIT_ARCH_X86_64, personalityX8664, 1<<32 | persona, allow},
		{"x86-64: another call", unix.AUDIT_ARCH_X86_64, unix.SYS_PTRACE, 0, allow},
		{"x32: another personality", unix.AUDIT_ARCH_X86_64, personalityX32, readImpliesExec, deny},
		{"x32: the locked personality", unix.AUDIT_ARCH_X86_64, personalityX32, persona, allow},
		{"i386: another personality", unix.AUDIT_ARCH_I386, personalityI386, readImpliesExec, deny},
		{"i386: a query", unix.AUDIT_ARCH_I386, personalityI386, queryPersonality, allow},
		{"i386: x86-64's number is another call", unix.AUDIT_ARCH_I386, personalityX8664, readImpliesExec, allow},
		{"another architecture", unix.AUDIT_ARCH_AARCH64, personalityX8664, readImpliesExec, allow},
	} {
		if got := runFilter(t, prog, tt.arch, tt.nr, tt.arg0); got != tt.want {
			t.Errorf("%s: %#x, want %#x", tt.name, got, tt.want)
		}
	}
}

// lockedHelperEnv makes the test binary a process that locks its
// personality, as the exec stage does, and reports what it can do then.
const lockedHelperEnv = "UMLSD_JAIL_TEST_LOCKED_PERSONALITY"

func TestMain(m *testing.M) {
	if os.Getenv(lockedHelperEnv) != "" {
		lockedHelper()
	}
	os.Exit(m.Run())
}

func lockedHelper() {
	fail := func(err error) { os.Stderr.WriteString(err.Error() + "\n"); os.Exit(1) }
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		fail(err)
	}
	if err := LockPersonality(AddrNoRandomize); err != nil {
		fail(err)
	}
	if _, _, errno := unix.RawSyscall(unix.SYS_PERSONALITY, readImpliesExec, 0, 0); !errors.Is(errno, unix.EPERM) {
		fail(errors.New("changing the locked personality: got " + errno.Error() + ", want EPERM"))
	}
	// What the thread executes inherits both.
	if err := unix.Exec("/bin/cat", []string{"cat", "/proc/self/personality"}, nil); err != nil {
		fail(err)
	}
}

// TestLockPersonality locks a real process's personality and reads it
// back from a program it executes.
func TestLockPersonality(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), lockedHelperEnv+"=1")
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("helper: %v: %s", err, ee.Stderr)
		}
		t.Fatal(err)
	}
	if got, want := strings.TrimSpace(string(out)), "00040000"; got != want {
		t.Errorf("personality after exec = %s, want %s (ADDR_NO_RANDOMIZE)", got, want)
	}
}
