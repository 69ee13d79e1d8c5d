package supervisor

import (
	"strconv"

	"umlsd/config"
)

// KernelCommandLine is the kernel's argv for g, in a fixed order: block
// devices, root, memory, identity and runtime directory, the management
// console's notifications, the network, the consoles, then the administrator's words
// (which config refuses when they would override any of the others).
func KernelCommandLine(g *config.Guest, l Layout) []string {
	argv := []string{g.Kernel}
	if g.Cow != "" {
		argv = append(argv, "ubd0="+g.Cow+","+g.RootImage)
	} else {
		argv = append(argv, "ubd0="+g.RootImage)
	}
	for i, d := range g.Disks {
		flags := ""
		if d.ReadOnly {
			flags = "r"
		}
		argv = append(argv, "ubd"+strconv.Itoa(i+1)+flags+"="+d.Path)
	}
	argv = append(argv,
		"root=/dev/ubda",
		"mem="+config.FormatSize(g.Memory),
		"umid="+l.UMID(),
		"uml_dir="+l.Dir,
		"mconsole=notify:"+l.Notify(),
	)
	if n := g.Network; n != nil {
		// The tap, opened by the supervisor (uml-facts.md, "Network"):
		// vec=0 because a tap descriptor does not support recvmmsg.
		argv = append(argv, "vec0:transport=fd,fd="+strconv.Itoa(kernelTapFD)+",vec=0,mac="+n.MAC.String())
	}
	// The first console reads fd 0 and writes fd 1, a terminal whose other
	// side the supervisor holds. Every other line is null: by default UML
	// starts terminal emulators on them.
	argv = append(argv, "con=null", "ssl=null", "con0=fd:0,fd:1")
	return append(argv, g.KernelArguments...)
}
