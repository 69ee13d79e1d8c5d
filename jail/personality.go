package jail

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// AddrNoRandomize is the personality flag that turns address space layout
// randomisation off for a process and what it executes (setarch -R).
const AddrNoRandomize = 0x0040000 // linux/personality.h

// LockPersonality sets the calling thread's execution domain and flags to
// persona and installs a seccomp filter that refuses any other personality
// from then on, to it and to what it executes: what systemd's
// LockPersonality=yes does for a unit, for a personality systemd cannot
// set (it sets the execution domain only, not flags such as
// ADDR_NO_RANDOMIZE). Querying stays allowed.
//
// The filter needs no_new_privs (DropPrivileges) or CAP_SYS_ADMIN, and, as
// DropPrivileges, belongs to the thread that executes next.
func LockPersonality(persona uint32) error {
	if _, _, errno := unix.RawSyscall(unix.SYS_PERSONALITY, uintptr(persona), 0, 0); errno != 0 {
		return fmt.Errorf("setting the personality %#x: %w", persona, errno)
	}
	prog := personalityFilter(persona)
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if _, _, errno := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&fprog))); errno != 0 {
		return fmt.Errorf("locking the personality: %w", errno)
	}
	return nil
}

// Where seccomp_data keeps what the filter looks at.
const (
	offsetNr   = 0
	offsetArch = 4
	offsetArg0 = 16 // the low half, on a little-endian machine
)

// Syscall numbers of personality(2) for each ABI an x86-64 process may use.
const (
	personalityX8664 = 135
	personalityX32   = 135 | 0x40000000 // __X32_SYSCALL_BIT
	personalityI386  = 136
	queryPersonality = 0xffffffff
)

// personalityFilter is a classic BPF program for seccomp that returns
// EPERM for personality(2) with an argument other than persona or the
// query, in every ABI of an x86-64 machine, and allows everything else.
func personalityFilter(persona uint32) []unix.SockFilter {
	stmt := func(code uint16, k uint32) unix.SockFilter { return unix.SockFilter{Code: code, K: k} }
	jeq := func(k uint32, jt, jf uint8) unix.SockFilter {
		return unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: k, Jt: jt, Jf: jf}
	}
	const (
		load  = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		ret   = unix.BPF_RET | unix.BPF_K
		allow = unix.SECCOMP_RET_ALLOW
		deny  = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
	)
	return []unix.SockFilter{
		/* 0 */ stmt(load, offsetArch),
		/* 1 */ jeq(unix.AUDIT_ARCH_X86_64, 0, 3), // else to 5
		/* 2 */ stmt(load, offsetNr),
		/* 3 */ jeq(personalityX8664, 4, 0), // to 8
		/* 4 */ jeq(personalityX32, 3, 7), // to 8, else to 12
		/* 5 */ jeq(unix.AUDIT_ARCH_I386, 0, 6), // else to 12
		/* 6 */ stmt(load, offsetNr),
		/* 7 */ jeq(personalityI386, 0, 4), // else to 12
		/* 8 */ stmt(load, offsetArg0),
		/* 9 */ jeq(persona, 2, 0), // to 12
		/* 10 */ jeq(queryPersonality, 1, 0), // to 12
		/* 11 */ stmt(ret, deny),
		/* 12 */ stmt(ret, allow),
	}
}
