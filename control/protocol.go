// Package control is the protocol between umlctl and a guest's supervisor:
// a unix stream socket, control.sock in the guest's runtime directory
// (root's, mode 0700), mode 0600, that answers root only (SO_PEERCRED).
//
// A connection carries one request. The client sends it as one JSON line;
// the server answers with one JSON line. An accepted console attach then
// turns the connection into a stream of frames both ways: a type byte, a
// big-endian u32 length, the payload. The server sends output frames (the
// replay of recent output first, then live output) and, when it ends the
// session, one notice frame saying why before it closes the connection. The
// client sends input frames and window sizes; it detaches by closing.
package control

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"
)

// SocketName is the control socket's name in a guest's runtime directory.
const SocketName = "control.sock"

// SocketPath is the control socket of guest name under runtimeDir
// (/run/uml on a host).
func SocketPath(runtimeDir, name string) string {
	return filepath.Join(runtimeDir, name, SocketName)
}

// Status is what a supervisor tells about its guest.
type Status struct {
	// KernelPID is the kernel's main process, 0 before it started.
	KernelPID int `json:"kernel_pid"`
	// Started is when the kernel was started.
	Started time.Time `json:"started"`
	// Ready: the guest met its Ready= condition.
	Ready bool `json:"ready"`
	// Boots counts the kernel's boots: 1, and one more for each reboot.
	Boots int `json:"boots"`
	// Frozen: the guest was stopped with mconsole stop and not yet let go.
	// Also true when FrozenUnknown.
	Frozen bool `json:"frozen"`
	// FrozenUnknown: the last mconsole stop or go failed other than by the
	// kernel's refusal (its answer did not come in time), so the guest may
	// or may not be frozen; mconsole go (umlctl thaw) settles it.
	FrozenUnknown bool `json:"frozen_unknown,omitempty"`
	// Stopping: the supervisor is stopping the guest.
	Stopping bool `json:"stopping"`
	// ConsoleAttached: an umlctl console is attached.
	ConsoleAttached bool `json:"console_attached"`
}

// Operations.
const (
	opStatus   = "status"
	opMconsole = "mconsole"
	opAttach   = "attach"
)

// request is the first and only line a client sends.
type request struct {
	Op string `json:"op"`
	// Command is the mconsole command of opMconsole.
	Command string `json:"command,omitempty"`
	// Timeout is how long the client waits, in milliseconds; the server
	// caps it.
	Timeout int64 `json:"timeout_ms,omitempty"`
	// Force takes the console over from an attached client (opAttach).
	Force bool `json:"force,omitempty"`
	// Rows and Cols are the client's window size (opAttach), 0 if unknown.
	Rows uint16 `json:"rows,omitempty"`
	Cols uint16 `json:"cols,omitempty"`
}

// response is the server's one line.
type response struct {
	Status   *Status    `json:"status,omitempty"`
	Reply    *string    `json:"reply,omitempty"`
	Attached bool       `json:"attached,omitempty"`
	Error    *wireError `json:"error,omitempty"`
}

// Kinds of wireError, which the client turns back into errors.
const (
	kindNotRunning = "not-running" // ErrNotRunning
	kindTimeout    = "timeout"     // ErrTimeout
	kindBusy       = "busy"        // ErrBusy
	kindKernel     = "kernel"      // *mconsole.CommandError
	kindDenied     = "denied"      // ErrDenied
	kindFailed     = "failed"      // *RemoteError
)

type wireError struct {
	Kind    string `json:"kind"`
	Message string `json:"message"`
	// Command and Code are the kernel's refusal (kindKernel).
	Command string `json:"command,omitempty"`
	Code    int32  `json:"code,omitempty"`
}

// Errors a client gets back.
var (
	// ErrNotRunning: the guest is not running (no supervisor answers on
	// its control socket, or its kernel has not started or has exited).
	ErrNotRunning = errors.New("the guest is not running")
	// ErrTimeout: the guest's kernel did not answer in time.
	ErrTimeout = errors.New("the guest's kernel did not answer in time")
	// ErrBusy: another client is attached to the console.
	ErrBusy = errors.New("another umlctl console is attached to the guest's console")
	// ErrDenied: the supervisor answers root only.
	ErrDenied = errors.New("the supervisor answers root only")
)

// RemoteError is a failure the supervisor reported.
type RemoteError struct{ Message string }

func (e *RemoteError) Error() string { return e.Message }

// SessionEnded ends a console stream that the supervisor ended: Reason
// says why (the guest's kernel exited, another client took over, …).
type SessionEnded struct{ Reason string }

func (e *SessionEnded) Error() string { return e.Reason }

// Frame types.
const (
	frameOutput = 'o' // server: console output
	frameNotice = 'n' // server: the session ends, and why
	frameInput  = 'i' // client: input for the guest
	frameSize   = 'w' // client: window size, rows and cols as big-endian u16
)

// maxFrame bounds a frame's payload; larger writes are split.
const maxFrame = 32 << 10

// maxLine bounds the request and response lines.
const maxLine = 256 << 10

func writeFrame(w io.Writer, typ byte, payload []byte) error {
	for first := true; first || len(payload) > 0; first = false {
		n := min(len(payload), maxFrame)
		b := make([]byte, 5, 5+n)
		b[0] = typ
		binary.BigEndian.PutUint32(b[1:], uint32(n))
		if _, err := w.Write(append(b, payload[:n]...)); err != nil {
			return err
		}
		payload = payload[n:]
	}
	return nil
}

func readFrame(r *bufio.Reader) (typ byte, payload []byte, err error) {
	var h [5]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(h[1:])
	if n > maxFrame {
		return 0, nil, fmt.Errorf("reading a frame: %d bytes, the limit is %d", n, maxFrame)
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, fmt.Errorf("reading a frame: %w", noEOF(err))
	}
	return h[0], payload, nil
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// readLine reads one JSON line of at most maxLine bytes into v: io.EOF if
// the connection ended before its first byte, io.ErrUnexpectedEOF if it
// ended in the line.
func readLine(r *bufio.Reader, v any) error {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > maxLine {
			return fmt.Errorf("reading a message: longer than %d bytes", maxLine)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF && len(line) > 0 {
			return io.ErrUnexpectedEOF
		}
		if err != nil {
			return err
		}
		break
	}
	if err := json.Unmarshal(line, v); err != nil {
		return fmt.Errorf("reading a message: %w", err)
	}
	return nil
}

func writeLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
