package supervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"

	"umlsd/jail"
)

// ExecKernelCommand is the hidden subcommand that runs the exec stage: the
// supervisor's own binary, started in a fresh mount namespace, builds the
// jail, drops privileges and executes the kernel. Go cannot do all of that
// between fork and exec.
const ExecKernelCommand = "exec-kernel"

// The exec stage's descriptor table after stdin, stdout and stderr (the
// console terminal). It is the one place that numbers them: stageFiles
// lays the files out by it, and the kernel's command line names the tap by
// it (KernelCommandLine).
const (
	stageSpecFD  = 3 // the stage reads its stageSpec here
	stageErrorFD = 4 // it writes why it failed here; closed on exec
	kernelTapFD  = 5 // kernelFiles.Tap, which the kernel inherits
)

// kernelFiles are the host files the kernel inherits besides its console.
type kernelFiles struct {
	Tap *os.File // the guest's tap (vec0:transport=fd), or nil
}

// stageFiles is the exec stage's exec.Cmd.ExtraFiles, laid out by the
// table above: entry i becomes descriptor 3+i, and a nil entry is closed.
func stageFiles(spec, errs *os.File, k kernelFiles) []*os.File {
	files := make([]*os.File, kernelTapFD-2)
	files[stageSpecFD-3] = spec
	files[stageErrorFD-3] = errs
	files[kernelTapFD-3] = k.Tap
	return files
}

// stageSpec is what the exec stage does.
type stageSpec struct {
	Jail     jail.Spec
	UID, GID int
	// Personality is the kernel's personality, locked before it runs
	// (jail.LockPersonality).
	Personality uint32
	Argv        []string
	Env         []string
}

// startStage starts the exec stage with the console terminal as its
// standard descriptors and the kernel's files where the table above puts
// them, and calls started with its pid before letting it go on. The
// kernel, once the stage executes it, has the same pid, and leads its own
// process group. It returns when the kernel runs, or with the stage's
// error.
func startStage(self string, spec stageSpec, console *os.File, files kernelFiles, started func(pid int) error) (*exec.Cmd, error) {
	specR, specW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer specR.Close()
	errR, errW, err := os.Pipe()
	if err != nil {
		specW.Close()
		return nil, err
	}
	defer errR.Close()
	cmd := &exec.Cmd{
		Path:       self,
		Args:       []string{"uml-supervisor", ExecKernelCommand},
		Env:        []string{},
		Stdin:      console,
		Stdout:     console,
		Stderr:     console,
		ExtraFiles: stageFiles(specR, errW, files),
		SysProcAttr: &syscall.SysProcAttr{
			// Go makes the new namespace's mounts private, so nothing the
			// stage mounts propagates to the host.
			Unshareflags: syscall.CLONE_NEWNS,
			Setpgid:      true,
		},
	}
	err = cmd.Start()
	errW.Close()
	if err != nil {
		specW.Close()
		return nil, fmt.Errorf("starting the exec stage: %w", err)
	}
	// The stage waits for its instructions: nothing runs before started.
	if err := started(cmd.Process.Pid); err != nil {
		specW.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, err
	}
	b, _ := json.Marshal(spec)
	_, werr := specW.Write(b)
	specW.Close()
	msg, _ := io.ReadAll(errR)
	if len(msg) > 0 || werr != nil {
		_ = cmd.Wait()
		if len(msg) == 0 {
			return nil, fmt.Errorf("passing the exec stage its instructions: %w", werr)
		}
		return nil, errors.New(string(msg))
	}
	return cmd, nil
}

// ExecKernel is the exec stage. It returns only on failure, after telling
// the supervisor why.
func ExecKernel() error {
	// The capability bounding set and no_new_privs belong to the thread
	// that executes the kernel.
	runtime.LockOSThread()
	err := execKernel()
	fmt.Fprint(os.NewFile(stageErrorFD, "exec-stage-errors"), err)
	return err
}

func execKernel() error {
	unix.CloseOnExec(stageErrorFD)
	var spec stageSpec
	specR := os.NewFile(stageSpecFD, "exec-stage-spec")
	if err := json.NewDecoder(specR).Decode(&spec); err != nil {
		return fmt.Errorf("reading the exec stage's instructions: %w", err)
	}
	specR.Close()
	if err := jail.Enter(spec.Jail); err != nil {
		return fmt.Errorf("building the jail: %w", err)
	}
	if err := jail.DropPrivileges(spec.UID, spec.GID); err != nil {
		return fmt.Errorf("dropping privileges: %w", err)
	}
	err := jail.LockPersonality(spec.Personality)
	if errors.Is(err, unix.EPERM) {
		return fmt.Errorf("%w; the unit may not lock the personality itself: remove LockPersonality= from its drop-ins", err)
	}
	if err != nil {
		return err
	}
	err = unix.Exec(spec.Argv[0], spec.Argv, spec.Env)
	return fmt.Errorf("executing %s: %w", spec.Argv[0], err)
}
