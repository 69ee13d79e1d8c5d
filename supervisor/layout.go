package supervisor

import (
	"path/filepath"
	"strconv"

	"umlsd/control"
)

// RuntimeDir holds one directory per running guest.
const RuntimeDir = "/run/uml"

// Layout is where a guest's runtime files are, on the host and as the
// kernel sees them. The two views share their absolute paths, so that what
// the kernel reports (its mconsole path) and what the host knows agree.
//
// On the host, Dir (mode 0700, root's) holds the record of what was created,
// the control socket, the notify socket and the jail's mount point. The kernel sees at Dir a
// small tmpfs of its own instead (its uml_dir: the kernel writes its umid
// directory there), with the notify socket bound in and a tmpfs for guest
// memory below it: everything the guest may write is in memory it cannot
// grow beyond its limits, and nothing it writes reaches the host's /run.
type Layout struct {
	Name string
	Dir  string
}

// NewLayout is the layout of guest name under root (RuntimeDir on a host).
func NewLayout(root, name string) Layout {
	return Layout{Name: name, Dir: filepath.Join(root, name)}
}

// Names in Dir that no guest name can take (a guest name starts with a
// letter or digit and has no dot), so that they never meet the kernel's
// umid directory, which is named after the guest.
const (
	stateName  = "state"
	notifyName = "notify.sock"
	jailName   = "jail"
	memoryName = "mem.d"
)

// State is the record of what the supervisor created.
func (l Layout) State() string { return filepath.Join(l.Dir, stateName) }

// Notify is the socket the kernel sends its mconsole notifications to.
func (l Layout) Notify() string { return filepath.Join(l.Dir, notifyName) }

// Control is the socket umlctl reaches the supervisor on.
func (l Layout) Control() string { return filepath.Join(l.Dir, control.SocketName) }

// Jail is the host directory the jail's root is mounted on (in the kernel's
// mount namespace only).
func (l Layout) Jail() string { return filepath.Join(l.Dir, jailName) }

// Memory is the tmpfs the kernel keeps guest memory in (its TMPDIR).
func (l Layout) Memory() string { return filepath.Join(l.Dir, memoryName) }

// UMID is the kernel's unique machine id: the guest's name.
func (l Layout) UMID() string { return l.Name }

// MconsoleInKernel is the kernel's management console socket as the kernel
// sees it.
func (l Layout) MconsoleInKernel() string {
	return filepath.Join(l.Dir, l.UMID(), "mconsole")
}

// procRoot is where the host sees a process's root directory.
func procRoot(pid int) string { return "/proc/" + strconv.Itoa(pid) + "/root" }
