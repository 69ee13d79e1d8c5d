package supervisor

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"time"

	"golang.org/x/sys/unix"
)

// openConsole makes the terminal the kernel's console runs on: the master
// side for the supervisor, the other side for the kernel's fd 0, 1 and 2.
// The other side is opened through the master (TIOCGPTPEER), so the jail
// needs no /dev/pts. UML puts it in raw mode itself.
func openConsole() (master, peer *os.File, err error) {
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("opening a terminal for the console: %w", err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(fd)
		return nil, nil, fmt.Errorf("unlocking the console terminal: %w", err)
	}
	pfd, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TIOCGPTPEER, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC)
	if errno != 0 {
		unix.Close(fd)
		return nil, nil, fmt.Errorf("opening the console terminal's peer: %w", errno)
	}
	return os.NewFile(uintptr(fd), "console"), os.NewFile(pfd, "console-peer"), nil
}

// consoleIdle is how long a partial console line (a prompt) waits for the
// rest before it is logged as it is.
const consoleIdle = 500 * time.Millisecond

// maxConsoleLine is the longest console line logged as one entry.
const maxConsoleLine = 4096

// readConsole logs every console line of the guest until the terminal
// closes, and closes matched when a line matches pattern (if not nil).
// Everything read also goes to out as it is (the console hub, which never
// blocks), before it is logged.
func readConsole(master *os.File, out io.Writer, log Log, pattern *regexp.Regexp, matched chan<- struct{}) {
	var line []byte
	buf := make([]byte, 4096)
	flush := func() {
		if len(line) == 0 {
			return
		}
		text := string(bytes.TrimRight(line, "\r"))
		line = line[:0]
		if text == "" {
			return // blank lines only pad the journal
		}
		log.Console(text)
		if pattern != nil && pattern.MatchString(text) {
			close(matched)
			pattern = nil
		}
	}
	for {
		if len(line) > 0 {
			_ = master.SetReadDeadline(time.Now().Add(consoleIdle))
		} else {
			_ = master.SetReadDeadline(time.Time{})
		}
		n, err := master.Read(buf)
		if n > 0 {
			_, _ = out.Write(buf[:n])
		}
		for _, b := range buf[:n] {
			if b == '\n' {
				flush()
				continue
			}
			line = append(line, b)
			if len(line) >= maxConsoleLine {
				flush()
			}
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			flush()
			continue
		}
		if err != nil { // EIO: the kernel and every copy of its side are gone
			flush()
			return
		}
	}
}
