package config

import "path/filepath"

// claim is something a guest uses that another guest may not, or may only
// share on terms.
type claim struct {
	key   string // the key that claims it
	kind  string // what is claimed, as the error names it
	value string
	// exclusive claims conflict with every other claim of the same thing;
	// shared claims only with exclusive ones.
	exclusive bool
	pos       Pos
	fix       string
}

// claims lists what a valid guest uses, with where the configuration says
// so. It runs once per guest, at parse time, while positions are known.
func (d *decoder) claims(g *Guest) []claim {
	var cs []claim
	add := func(key, kind, value string, exclusive bool, pos Pos, fix string) {
		cs = append(cs, claim{key, kind, value, exclusive, pos, fix})
	}
	const (
		file       = "the file"
		theyWrite  = "that guest writes to it, so no other guest may use it"
		weWrite    = "this guest writes to it, so no other guest may use it; use a COW file or :ro"
		ownAccount = "guests share an account only when each of them names it with User="
	)
	if g.Cow != "" {
		add("Cow", file, g.Cow, true, d.where("Guest", "Cow", g.Path), "give each guest its own COW file with Cow=")
		add("RootImage", file, g.RootImage, false, d.where("Guest", "RootImage", g.Path), theyWrite)
	} else {
		add("RootImage", file, g.RootImage, true, d.where("Guest", "RootImage", g.Path), weWrite)
	}
	for i, it := range d.list("Guest", "Disk") { // all valid: one item per disk
		if g.Disks[i].ReadOnly {
			add("Disk", file, g.Disks[i].Path, false, it.pos, theyWrite)
		} else {
			add("Disk", file, g.Disks[i].Path, true, it.pos, weWrite)
		}
	}
	if g.UserIsDefault {
		add("User", "the account", g.User, true, d.where("Guest", "User", g.Path), "it is this guest's default account, and "+ownAccount)
	} else {
		add("User", "the account", g.User, false, d.where("Guest", "User", g.Path), "it is that guest's default account, and "+ownAccount)
	}
	if n := g.Network; n != nil {
		// A tap is deleted when its guest stops: its name must be its own,
		// and no other guest's bridge.
		add("Tap", "the interface", n.Tap, true, d.where("Network", "Tap", g.Path), "a guest's tap is deleted when the guest stops, so its name must be its own; choose another Tap=")
		add("Bridge", "the interface", n.Bridge, false, d.where("Network", "Bridge", g.Path), "that guest's tap has this name and is deleted when that guest stops; choose another Tap= there")
		add("MAC", "the MAC address", n.MAC.String(), true, d.where("Network", "MAC", g.Path), "give each guest its own MAC=")
		for i, it := range d.list("Network", "Address") {
			add("Address", "the address", n.Addresses[i].Addr().String(), true, it.pos, "an address belongs to one guest")
		}
	}
	return cs
}

// findConflicts returns, for each guest (nil entries are skipped), what it
// claims that another guest claims too. It is linear in the number of
// claims: many guests share a bridge or a backing image.
func findConflicts(guests []*Guest) []Errors {
	// For each thing claimed: its first two claimants (to name another
	// one), and its first exclusive claimant.
	type claimants struct{ first, second, exclusive int }
	things := make(map[[2]string]claimants, 8*len(guests))
	for i, g := range guests {
		if g == nil {
			continue
		}
		for _, c := range g.claims {
			k := [2]string{c.kind, c.value}
			t, seen := things[k]
			if !seen {
				t = claimants{first: i, second: -1, exclusive: -1}
			} else if t.second < 0 && t.first != i {
				t.second = i
			}
			if c.exclusive && t.exclusive < 0 {
				t.exclusive = i
			}
			things[k] = t
		}
	}
	out := make([]Errors, len(guests))
	for i, g := range guests {
		if g == nil {
			continue
		}
		for _, c := range g.claims {
			t := things[[2]string{c.kind, c.value}]
			other := -1
			switch {
			case c.exclusive && t.first != i:
				other = t.first
			case c.exclusive:
				other = t.second
			case t.exclusive >= 0 && t.exclusive != i:
				other = t.exclusive
			}
			if other >= 0 {
				o := guests[other]
				out[i].add(c.pos, "%s=%s: %s is also used by guest %s (%s); %s", c.key, c.value, c.kind, o.Name, filepath.Base(o.Path), c.fix)
			}
		}
	}
	return out
}
