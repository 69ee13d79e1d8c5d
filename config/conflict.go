package config

import "path/filepath"

// claim is something a guest uses that another guest may not, or may only
// share on terms.
type claim struct {
	kind  string // what is claimed, as the error names it
	value string
	// exclusive claims conflict with every other claim of the same thing;
	// shared claims only with exclusive ones.
	exclusive bool
	pos       Pos
	fix       string
}

func (g *Guest) claims() []claim {
	var cs []claim
	add := func(kind, value string, exclusive bool, key, fix string) {
		cs = append(cs, claim{kind, value, exclusive, g.posOf(key), fix})
	}
	const (
		file       = "the file"
		theyWrite  = "that guest writes to it, so no other guest may use it"
		weWrite    = "this guest writes to it, so no other guest may use it; use a COW file or :ro"
		ownAccount = "guests share an account only when each of them names it with User="
	)
	if g.Cow != "" {
		add(file, g.Cow, true, "Guest.Cow", "give each guest its own COW file with Cow=")
		add(file, g.RootImage, false, "Guest.RootImage", theyWrite)
	} else {
		add(file, g.RootImage, true, "Guest.RootImage", weWrite)
	}
	for _, d := range g.Disks {
		if d.ReadOnly {
			add(file, d.Path, false, "Guest.Disk", theyWrite)
		} else {
			add(file, d.Path, true, "Guest.Disk", weWrite)
		}
	}
	if g.UserIsDefault {
		add("the account", g.User, true, "[Guest]", "it is this guest's default account, and "+ownAccount)
	} else {
		add("the account", g.User, false, "Guest.User", "it is that guest's default account, and "+ownAccount)
	}
	if n := g.Network; n != nil {
		add("the tap", n.Tap, true, "Network.Tap", "give each guest its own Tap=")
		add("the MAC address", n.MAC.String(), true, "Network.MAC", "give each guest its own MAC=")
		for _, a := range n.Addresses {
			add("the address", a.Addr().String(), true, "Network.Address", "an address belongs to one guest")
		}
	}
	return cs
}

// posOf says where a key was written, falling back to its section header
// and then to the first line of the main file.
func (g *Guest) posOf(key string) Pos {
	if p, ok := g.pos[key]; ok {
		return p
	}
	for i := range key {
		if key[i] == '.' {
			if p, ok := g.pos["["+key[:i]+"]"]; ok {
				return p
			}
		}
	}
	return Pos{File: g.Path, Line: 1}
}

// findConflicts returns, for each guest (nil entries are skipped), what it
// claims that another guest claims too.
func findConflicts(guests []*Guest) []Errors {
	type owner struct {
		guest int
		claim claim
	}
	byThing := map[[2]string][]owner{}
	for i, g := range guests {
		if g == nil {
			continue
		}
		for _, c := range g.claims() {
			k := [2]string{c.kind, c.value}
			byThing[k] = append(byThing[k], owner{i, c})
		}
	}
	out := make([]Errors, len(guests))
	for i, g := range guests {
		if g == nil {
			continue
		}
		for _, c := range g.claims() {
			for _, o := range byThing[[2]string{c.kind, c.value}] {
				if o.guest == i || !c.exclusive && !o.claim.exclusive {
					continue
				}
				other := guests[o.guest]
				out[i].add(c.pos, "%s %s is also used by guest %s (%s); %s", c.kind, c.value, other.Name, filepath.Base(other.Path), c.fix)
				break
			}
		}
	}
	return out
}
