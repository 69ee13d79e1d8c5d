package config

import (
	"bytes"
	"fmt"
)

// Format writes g as one configuration file that parses back to the same
// guest, with every default written out but the kernel and the account,
// which depend on the host.
func Format(g *Guest) []byte {
	var b bytes.Buffer
	kv := func(k, v string) { fmt.Fprintf(&b, "%s=%s\n", k, v) }
	b.WriteString("[Guest]\n")
	kv("Description", g.Description)
	if !g.KernelIsDefault {
		kv("Kernel", g.Kernel)
	}
	kv("RootImage", g.RootImage)
	if g.Cow == "" {
		kv("Cow", "no")
	} else {
		kv("Cow", g.Cow)
	}
	for _, d := range g.Disks {
		kv("Disk", d.String())
	}
	kv("Memory", FormatSize(g.Memory))
	if !g.UserIsDefault {
		kv("User", g.User)
	}
	if g.Group != "" {
		kv("Group", g.Group)
	}
	kv("Chroot", yesNo(g.Chroot))
	for _, a := range g.KernelArguments {
		kv("KernelArguments", a)
	}
	kv("Ready", g.Ready.String())
	kv("ReadyTimeout", g.ReadyTimeout.String())
	kv("StopTimeout", g.StopTimeout.String())
	if n := g.Network; n != nil {
		b.WriteString("\n[Network]\n")
		kv("Bridge", n.Bridge)
		kv("Tap", n.Tap)
		kv("MAC", n.MAC.String())
		for _, a := range n.Addresses {
			kv("Address", a.String())
		}
		kv("AntiSpoofing", yesNo(n.AntiSpoofing))
	}
	if f := g.Firewall; f != nil {
		b.WriteString("\n[Firewall]\n")
		for _, l := range []struct {
			key   string
			rules []Rule
		}{{"AcceptIn", f.AcceptIn}, {"ConnectOut", f.ConnectOut}, {"HostAccess", f.HostAccess}} {
			for _, r := range l.rules {
				kv(l.key, r.String())
			}
		}
		kv("Log", yesNo(f.Log))
	}
	for _, s := range []struct {
		name     string
		settings []Setting
	}{{sectionUnit, g.Unit}, {sectionService, g.Service}} {
		if len(s.settings) > 0 {
			fmt.Fprintf(&b, "\n[%s]\n", s.name)
			for _, st := range s.settings {
				kv(st.Key, st.Value)
			}
		}
	}
	if len(g.WantedBy)+len(g.RequiredBy) > 0 {
		b.WriteString("\n[Install]\n")
		for _, u := range g.WantedBy {
			kv("WantedBy", u)
		}
		for _, u := range g.RequiredBy {
			kv("RequiredBy", u)
		}
	}
	return b.Bytes()
}

func yesNo(v bool) string {
	if v {
		return "yes"
	}
	return "no"
}
