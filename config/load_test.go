package config

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"umlsd/internal/testbed"
)

// confDir is a configuration directory for the Loader in a temporary
// directory, owned by the test's user.
type confDir struct {
	t   *testing.T
	dir string
}

func newConfDir(t *testing.T) *confDir {
	t.Helper()
	c := &confDir{t, filepath.Join(t.TempDir(), "uml")}
	c.mkdir("", 0o755)
	return c
}

// path is rel inside the directory.
func (c *confDir) path(rel string) string { return filepath.Join(c.dir, rel) }

// mkdir creates a directory inside the configuration directory (or the
// directory itself, for "") with exactly the given mode.
func (c *confDir) mkdir(rel string, mode os.FileMode) {
	c.t.Helper()
	if err := os.MkdirAll(c.path(rel), 0o755); err != nil {
		c.t.Fatal(err)
	}
	c.chmod(rel, mode)
}

// write creates a file with mode 0644, and its directory if needed.
func (c *confDir) write(rel, data string) {
	c.t.Helper()
	if dir := filepath.Dir(rel); dir != "." {
		c.mkdir(dir, 0o755)
	}
	if err := os.WriteFile(c.path(rel), []byte(data), 0o644); err != nil {
		c.t.Fatal(err)
	}
	c.chmod(rel, 0o644) // whatever the umask
}

func (c *confDir) chmod(rel string, mode os.FileMode) {
	c.t.Helper()
	if err := os.Chmod(c.path(rel), mode); err != nil {
		c.t.Fatal(err)
	}
}

// loader trusts files owned by the test's user.
func (c *confDir) loader() Loader { return Loader{Dir: c.dir, Owner: uint32(os.Getuid())} }

// hide replaces the directory's path with DIR, so that messages can be
// compared.
func (c *confDir) hide(s string) string { return strings.ReplaceAll(s, c.dir, "DIR") }

// summary is what a test compares of a Set.
type summary struct {
	Guests   []string // names
	Failed   []string // "NAME (PATH): error"
	Warnings []string
}

func (c *confDir) loadAll() summary {
	c.t.Helper()
	set, err := c.loader().LoadAll()
	if err != nil {
		c.t.Fatalf("LoadAll: %v", err)
	}
	var s summary
	for _, g := range set.Guests {
		s.Guests = append(s.Guests, g.Name)
	}
	for _, f := range set.Failed {
		s.Failed = append(s.Failed, c.hide(f.Name+" ("+f.Path+"): "+f.Err.Error()))
	}
	for _, w := range set.Warnings {
		s.Warnings = append(s.Warnings, c.hide(w))
	}
	return s
}

// guestConf is a valid guest file; its [Network] (with an address unique
// to the guest's index) comes last, so extra lines may add to it.
func guestConf(addr string, extra ...string) string {
	return withGuest(append([]string{"[Network]", "Bridge=br0", "Address=" + addr}, extra...)...)
}

func TestLoad(t *testing.T) {
	c := newConfDir(t)
	c.write("dns.conf", withGuest("Memory=1G", "Disk=/srv/a.img"))
	c.write("dns.conf.d/20-b.conf", lines("[Guest]", "Memory=2G", "Disk=/srv/b.img"))
	c.write("dns.conf.d/10-a.conf", lines("[Guest]", "Memory=3G", "Disk="))
	c.write("dns.conf.d/9-c.conf", lines("[Guest]", "Disk=/srv/c.img")) // after 20-b: lexical order
	c.write("dns.conf.d/README", "not a configuration")
	c.write("dns.conf.d/30-d.conf.disabled", "not a configuration")
	c.write("dns.conf.d/.40-e.conf", "not a configuration")
	c.write("dns.conf.d/50-f.conf~", "not a configuration")
	g, err := c.loader().Load("dns")
	if err != nil {
		t.Fatal(err)
	}
	want := defaultGuest("dns")
	want.Memory = 2 << 30
	want.Disks = []Disk{{"/srv/b.img", false}, {"/srv/c.img", false}}
	if diff := cmp.Diff(want, g, guestOpts); diff != "" {
		t.Errorf("Load (-want +got):\n%s", diff)
	}
	wantFiles := []string{"DIR/dns.conf", "DIR/dns.conf.d/10-a.conf", "DIR/dns.conf.d/20-b.conf", "DIR/dns.conf.d/9-c.conf"}
	if diff := cmp.Diff(wantFiles, append([]string{c.hide(g.Path)}, mapStrings(g.DropIns, c.hide)...)); diff != "" {
		t.Errorf("files read (-want +got):\n%s", diff)
	}
}

// TestLoadDefaultKernel: the installed kernel is the default, and a
// Kernel= that is written stays.
func TestLoadDefaultKernel(t *testing.T) {
	c := newConfDir(t)
	c.write("dns.conf", withGuest())
	c.write("web.conf", withGuest("Kernel=/usr/bin/linux.uml"))
	l := c.loader()
	l.Kernel = "/usr/libexec/umlsd/linux"
	for name, want := range map[string]string{"dns": l.Kernel, "web": "/usr/bin/linux.uml"} {
		g, err := l.Load(name)
		if err != nil {
			t.Fatal(err)
		}
		if g.Kernel != want || g.KernelIsDefault != (name == "dns") {
			t.Errorf("%s: Kernel=%s (default: %v), want %s", name, g.Kernel, g.KernelIsDefault, want)
		}
	}
}

func mapStrings(ss []string, f func(string) string) []string {
	var out []string
	for _, s := range ss {
		out = append(out, f(s))
	}
	return out
}

func TestLoadErrors(t *testing.T) {
	for _, tc := range []struct {
		desc  string
		name  string
		setup func(c *confDir)
		want  string
	}{
		{"errors name the file and line", "dns", func(c *confDir) {
			c.write("dns.conf", withGuest("Memroy=1G"))
			c.write("dns.conf.d/10.conf", lines("[Guest]", "Memory=1K"))
		}, "DIR/dns.conf:3: Memroy= is not a key of [Guest]; did you mean Memory=?\n" +
			"DIR/dns.conf.d/10.conf:2: Memory=1K is less than the 16M a guest needs at least"},
		{"missing file", "dns", func(*confDir) {},
			"DIR/dns.conf: cannot be read: no such file or directory"},
		{"invalid name", "../dns", func(*confDir) {},
			`"../dns" is not a guest name; a guest's name is 1 to 32 lower-case letters, digits, dashes and underscores, starting with a letter or digit`},
		{"file writable by group", "dns", func(c *confDir) {
			c.write("dns.conf", withGuest())
			c.chmod("dns.conf", 0o664)
		}, "DIR/dns.conf: refused: the file is writable by group or others, but it decides what root runs; run chmod go-w DIR/dns.conf"},
		{"file writable by others", "dns", func(c *confDir) {
			c.write("dns.conf", withGuest())
			c.chmod("dns.conf", 0o646)
		}, "DIR/dns.conf: refused: the file is writable by group or others, but it decides what root runs; run chmod go-w DIR/dns.conf"},
		{"directory writable", "dns", func(c *confDir) {
			c.write("dns.conf", withGuest())
			c.chmod("", 0o775)
		}, "DIR: refused: the directory is writable by group or others, but it decides what root runs; run chmod go-w DIR"},
		{"drop-in directory writable", "dns", func(c *confDir) {
			c.write("dns.conf", withGuest())
			c.write("dns.conf.d/10.conf", lines("[Guest]"))
			c.chmod("dns.conf.d", 0o757)
		}, "DIR/dns.conf.d: refused: the directory is writable by group or others, but it decides what root runs; run chmod go-w DIR/dns.conf.d"},
		{"drop-in file writable", "dns", func(c *confDir) {
			c.write("dns.conf", withGuest())
			c.write("dns.conf.d/10.conf", lines("[Guest]"))
			c.chmod("dns.conf.d/10.conf", 0o666)
		}, "DIR/dns.conf.d/10.conf: refused: the file is writable by group or others, but it decides what root runs; run chmod go-w DIR/dns.conf.d/10.conf"},
		{"not a regular file", "dns", func(c *confDir) {
			c.mkdir("dns.conf", 0o755)
		}, "DIR/dns.conf: is not a regular file; a guest configuration must be one"},
		{"drop-in not a regular file", "dns", func(c *confDir) {
			c.write("dns.conf", withGuest())
			c.mkdir("dns.conf.d/10.conf", 0o755)
		}, "DIR/dns.conf.d/10.conf: is not a regular file; a guest configuration must be one"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			c := newConfDir(t)
			tc.setup(c)
			g, err := c.loader().Load(tc.name)
			if diff := cmp.Diff(tc.want, c.hide(errText(err))); diff != "" {
				t.Errorf("Load error (-want +got):\n%s", diff)
			}
			if g != nil {
				t.Errorf("Load returned a guest beside the error")
			}
			if set, err := c.loader().LoadAll(); err == nil && len(set.Guests) > 0 {
				t.Errorf("LoadAll loaded %s, which Load refuses", set.Guests[0].Name)
			}
		})
	}
}

// chownOrSkip gives a file to another user, which needs root.
func chownOrSkip(t *testing.T, path string, uid int) {
	t.Helper()
	testbed.RequireRoot(t)
	if err := os.Lchown(path, uid, -1); err != nil {
		t.Fatal(err)
	}
}

func TestLoadWrongOwner(t *testing.T) {
	const other = 4242
	for _, tc := range []struct {
		desc, chown, want string
	}{
		{"file", "dns.conf", "DIR/dns.conf: refused: the file is owned by uid 4242, but it decides what root runs and must be owned by uid UID; run chown UID DIR/dns.conf"},
		{"directory", "", "DIR: refused: the directory is owned by uid 4242, but it decides what root runs and must be owned by uid UID; run chown UID DIR"},
		{"drop-in directory", "dns.conf.d", "DIR/dns.conf.d: refused: the directory is owned by uid 4242, but it decides what root runs and must be owned by uid UID; run chown UID DIR/dns.conf.d"},
		{"drop-in", "dns.conf.d/10.conf", "DIR/dns.conf.d/10.conf: refused: the file is owned by uid 4242, but it decides what root runs and must be owned by uid UID; run chown UID DIR/dns.conf.d/10.conf"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			c := newConfDir(t)
			c.write("dns.conf", withGuest())
			c.write("dns.conf.d/10.conf", lines("[Guest]"))
			chownOrSkip(t, c.path(tc.chown), other)
			_, err := c.loader().Load("dns")
			want := strings.ReplaceAll(tc.want, "UID", strconv.Itoa(os.Getuid()))
			if diff := cmp.Diff(want, c.hide(errText(err))); diff != "" {
				t.Errorf("Load error (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoadSymlink(t *testing.T) {
	for _, tc := range []struct {
		desc      string
		targetDir os.FileMode
		want      string
	}{
		{"target directory trusted", 0o755, ""},
		{"target directory writable by others", 0o777, "TARGET: refused: the directory is writable by group or others, but it decides what root runs; run chmod go-w TARGET"},
		{"target directory writable by group", 0o775, "TARGET: refused: the directory is writable by group or others, but it decides what root runs; run chmod go-w TARGET"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			c := newConfDir(t)
			target := filepath.Join(t.TempDir(), "shared")
			if err := os.Mkdir(target, 0o755); err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(target, "dns.conf")
			if err := os.WriteFile(file, []byte(withGuest("Memory=1G")), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(target, tc.targetDir); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(file, c.path("dns.conf")); err != nil {
				t.Fatal(err)
			}
			g, err := c.loader().Load("dns")
			got := strings.ReplaceAll(errText(err), target, "TARGET")
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Load error (-want +got):\n%s", diff)
			}
			if err == nil && g.Memory != 1<<30 {
				t.Errorf("Memory = %d, want the target's 1G", g.Memory)
			}
		})
	}
}

func TestLoadAllMissingDirectory(t *testing.T) {
	set, err := Loader{Dir: filepath.Join(t.TempDir(), "nothing"), Owner: uint32(os.Getuid())}.LoadAll()
	if err != nil {
		t.Fatalf("LoadAll: %v", err)
	}
	if diff := cmp.Diff(&Set{}, set); diff != "" {
		t.Errorf("LoadAll (-want +got):\n%s", diff)
	}
}

func TestLoadAllUntrustedDirectory(t *testing.T) {
	c := newConfDir(t)
	c.write("dns.conf", withGuest())
	c.chmod("", 0o777)
	_, err := c.loader().LoadAll()
	want := "DIR: refused: the directory is writable by group or others, but it decides what root runs; run chmod go-w DIR"
	if diff := cmp.Diff(want, c.hide(errText(err))); diff != "" {
		t.Errorf("LoadAll error (-want +got):\n%s", diff)
	}
}

func TestLoadAllFiles(t *testing.T) {
	c := newConfDir(t)
	c.write("dns.conf", guestConf("10.1.1.10"))
	c.write("web.conf", guestConf("10.1.1.11"))
	c.write("web.conf.d/10-mem.conf", lines("[Guest]", "Memory=1G"))
	// Not guests: warned about.
	c.write("Mail.conf", guestConf("10.1.1.12"))
	c.write("README", "see uml.conf(5)")
	c.write("dns.cfg", guestConf("10.1.1.13"))
	c.mkdir("templates", 0o755)
	c.write("orphan.conf.d/10.conf", lines("[Guest]"))
	// Editor and package manager leftovers: ignored silently.
	for _, f := range []string{"dns.conf~", ".dns.conf.swp", "dns.conf.bak", "dns.conf.dpkg-old", "dns.conf.dpkg-dist", "#dns.conf#", "dns.conf.orig", "dns.conf.rpmnew"} {
		c.write(f, "garbage")
	}
	want := summary{
		Guests: []string{"dns", "web"},
		Warnings: []string{
			`"DIR/Mail.conf": ignored: guest configurations are named NAME.conf, and a guest's name is 1 to 32 lower-case letters, digits, dashes and underscores, starting with a letter or digit`,
			`"DIR/README": ignored: guest configurations are named NAME.conf, and a guest's name is 1 to 32 lower-case letters, digits, dashes and underscores, starting with a letter or digit`,
			`"DIR/dns.cfg": ignored: guest configurations are named NAME.conf, and a guest's name is 1 to 32 lower-case letters, digits, dashes and underscores, starting with a letter or digit`,
			`"DIR/templates": ignored: guest configurations are named NAME.conf, and a guest's name is 1 to 32 lower-case letters, digits, dashes and underscores, starting with a letter or digit`,
			"DIR/orphan.conf.d: ignored: there is no orphan.conf for these drop-ins to apply to",
		},
	}
	if diff := cmp.Diff(want, c.loadAll()); diff != "" {
		t.Errorf("LoadAll (-want +got):\n%s", diff)
	}
	set, _ := c.loader().LoadAll()
	if web := set.Guests[1]; web.Memory != 1<<30 || len(web.DropIns) != 1 {
		t.Errorf("web: Memory %d with drop-ins %q; want 1G from web.conf.d/10-mem.conf", web.Memory, web.DropIns)
	}
}

func TestLoadAllBrokenGuest(t *testing.T) {
	c := newConfDir(t)
	c.write("a.conf", guestConf("10.1.1.10"))
	c.write("b.conf", lines("[Guest]", "Memory=1G"))
	c.write("c.conf", guestConf("10.1.1.12"))
	c.write("d.conf", guestConf("10.1.1.13"))
	c.chmod("d.conf", 0o666)
	c.write("e.conf", guestConf("10.1.1.14"))
	c.write("e.conf.d/10.conf", lines("[Network]", "Tap=not a tap"))
	want := summary{
		Guests: []string{"a", "c"},
		Failed: []string{
			"b (DIR/b.conf): DIR/b.conf:1: RootImage= is missing in [Guest]; set it to the guest's root filesystem image",
			"d (DIR/d.conf): DIR/d.conf: refused: the file is writable by group or others, but it decides what root runs; run chmod go-w DIR/d.conf",
			"e (DIR/e.conf): DIR/e.conf.d/10.conf:2: Tap=not a tap is not an interface name; use letters, digits, dashes, underscores and dots",
		},
	}
	if diff := cmp.Diff(want, c.loadAll()); diff != "" {
		t.Errorf("LoadAll (-want +got):\n%s", diff)
	}
}

func TestLoadAllConflicts(t *testing.T) {
	const (
		weWrite   = "this guest writes to it, so no other guest may use it; use a COW file or :ro"
		theyWrite = "that guest writes to it, so no other guest may use it"
	)
	// Guest files of these cases start with withGuest: their extra lines
	// start at line 3; guestConf's [Network] is line 3 and its own extra
	// lines start at line 6.
	for _, tc := range []struct {
		desc  string
		files map[string]string
		want  summary
	}{
		{"same Tap", map[string]string{
			"a.conf": guestConf("10.1.1.10", "Tap=tap0"),
			"b.conf": guestConf("10.1.1.11", "Tap=tap0"),
			"c.conf": guestConf("10.1.1.12"),
		}, summary{Guests: []string{"c"}, Failed: []string{
			"a (DIR/a.conf): DIR/a.conf:6: Tap=tap0: the interface is also used by guest b (b.conf); a guest's tap is deleted when the guest stops, so its name must be its own; choose another Tap=",
			"b (DIR/b.conf): DIR/b.conf:6: Tap=tap0: the interface is also used by guest a (a.conf); a guest's tap is deleted when the guest stops, so its name must be its own; choose another Tap=",
		}}},
		{"Tap= naming another guest's default tap", map[string]string{
			"a.conf": guestConf("10.1.1.10"),
			"b.conf": guestConf("10.1.1.11", "Tap=uml-a"),
		}, summary{Failed: []string{
			"a (DIR/a.conf): DIR/a.conf:3: Tap=uml-a: the interface is also used by guest b (b.conf); a guest's tap is deleted when the guest stops, so its name must be its own; choose another Tap=",
			"b (DIR/b.conf): DIR/b.conf:6: Tap=uml-a: the interface is also used by guest a (a.conf); a guest's tap is deleted when the guest stops, so its name must be its own; choose another Tap=",
		}}},
		{"Tap= naming another guest's bridge", map[string]string{
			"a.conf": guestConf("10.1.1.10"),
			"b.conf": withGuest("[Network]", "Bridge=br1", "Address=10.1.1.11", "Tap=br0"),
		}, summary{Failed: []string{
			"a (DIR/a.conf): DIR/a.conf:4: Bridge=br0: the interface is also used by guest b (b.conf); that guest's tap has this name and is deleted when that guest stops; choose another Tap= there",
			"b (DIR/b.conf): DIR/b.conf:6: Tap=br0: the interface is also used by guest a (a.conf); a guest's tap is deleted when the guest stops, so its name must be its own; choose another Tap=",
		}}},
		{"same MAC", map[string]string{
			"a.conf": guestConf("10.1.1.10", "MAC=52:54:00:00:00:01"),
			"b.conf": guestConf("10.1.1.11", "MAC=52:54:00:00:00:01"),
		}, summary{Failed: []string{
			"a (DIR/a.conf): DIR/a.conf:6: MAC=52:54:00:00:00:01: the MAC address is also used by guest b (b.conf); give each guest its own MAC=",
			"b (DIR/b.conf): DIR/b.conf:6: MAC=52:54:00:00:00:01: the MAC address is also used by guest a (a.conf); give each guest its own MAC=",
		}}},
		{"same Address, one with a prefix", map[string]string{
			"a.conf": guestConf("2001:db8::1 10.1.1.10/24"),
			"b.conf": guestConf("10.1.1.10"),
		}, summary{Failed: []string{
			"a (DIR/a.conf): DIR/a.conf:5: Address=10.1.1.10: the address is also used by guest b (b.conf); an address belongs to one guest",
			"b (DIR/b.conf): DIR/b.conf:5: Address=10.1.1.10: the address is also used by guest a (a.conf); an address belongs to one guest",
		}}},
		{"same Cow", map[string]string{
			"a.conf": withGuest("Cow=/var/lib/uml/shared.cow"),
			"b.conf": withGuest("Cow=/var/lib/uml//shared.cow"),
		}, summary{Failed: []string{
			"a (DIR/a.conf): DIR/a.conf:3: Cow=/var/lib/uml/shared.cow: the file is also used by guest b (b.conf); give each guest its own COW file with Cow=",
			"b (DIR/b.conf): DIR/b.conf:3: Cow=/var/lib/uml/shared.cow: the file is also used by guest a (a.conf); give each guest its own COW file with Cow=",
		}}},
		{"Cow=no image used by another guest", map[string]string{
			"a.conf": withGuest("Cow=no"),
			"b.conf": withGuest(),
		}, summary{Failed: []string{
			"a (DIR/a.conf): DIR/a.conf:2: RootImage=/srv/uml/root.img: the file is also used by guest b (b.conf); " + weWrite,
			"b (DIR/b.conf): DIR/b.conf:2: RootImage=/srv/uml/root.img: the file is also used by guest a (a.conf); " + theyWrite,
		}}},
		{"Cow=no image used as another guest's disk", map[string]string{
			"a.conf": withGuest("Cow=no"),
			"b.conf": lines("[Guest]", "RootImage=/srv/b.img", "Disk=/srv/uml/root.img:ro"),
		}, summary{Failed: []string{
			"a (DIR/a.conf): DIR/a.conf:2: RootImage=/srv/uml/root.img: the file is also used by guest b (b.conf); " + weWrite,
			"b (DIR/b.conf): DIR/b.conf:3: Disk=/srv/uml/root.img: the file is also used by guest a (a.conf); " + theyWrite,
		}}},
		{"Cow file used as another guest's root image", map[string]string{
			"a.conf": withGuest("Cow=/srv/b.img"),
			"b.conf": lines("[Guest]", "RootImage=/srv/b.img"),
		}, summary{Failed: []string{
			"a (DIR/a.conf): DIR/a.conf:3: Cow=/srv/b.img: the file is also used by guest b (b.conf); give each guest its own COW file with Cow=",
			"b (DIR/b.conf): DIR/b.conf:2: RootImage=/srv/b.img: the file is also used by guest a (a.conf); " + theyWrite,
		}}},
		{"writable Disk shared", map[string]string{
			"a.conf": withGuest("Disk=/srv/data.img"),
			"b.conf": withGuest("Disk=/srv/data.img"),
		}, summary{Failed: []string{
			"a (DIR/a.conf): DIR/a.conf:3: Disk=/srv/data.img: the file is also used by guest b (b.conf); " + weWrite,
			"b (DIR/b.conf): DIR/b.conf:3: Disk=/srv/data.img: the file is also used by guest a (a.conf); " + weWrite,
		}}},
		{"writable Disk read by another guest", map[string]string{
			"a.conf": withGuest("Disk=/srv/data.img"),
			"b.conf": withGuest("Disk=/srv/data.img:ro"),
		}, summary{Failed: []string{
			"a (DIR/a.conf): DIR/a.conf:3: Disk=/srv/data.img: the file is also used by guest b (b.conf); " + weWrite,
			"b (DIR/b.conf): DIR/b.conf:3: Disk=/srv/data.img: the file is also used by guest a (a.conf); " + theyWrite,
		}}},
		{"User= naming another guest's default account", map[string]string{
			"a.conf": withGuest(),
			"b.conf": withGuest("User=uml-a"),
		}, summary{Failed: []string{
			"a (DIR/a.conf): DIR/a.conf:1: User=uml-a: the account is also used by guest b (b.conf); it is this guest's default account, and guests share an account only when each of them names it with User=",
			"b (DIR/b.conf): DIR/b.conf:3: User=uml-a: the account is also used by guest a (a.conf); it is that guest's default account, and guests share an account only when each of them names it with User=",
		}}},
		{"conflicts found in a drop-in", map[string]string{
			"a.conf":           guestConf("10.1.1.10"),
			"b.conf":           guestConf("10.1.1.11"),
			"b.conf.d/10.conf": lines("# a's address", "[Network]", "Address=", "Address=10.1.1.10"),
		}, summary{Failed: []string{
			"a (DIR/a.conf): DIR/a.conf:5: Address=10.1.1.10: the address is also used by guest b (b.conf); an address belongs to one guest",
			"b (DIR/b.conf): DIR/b.conf.d/10.conf:4: Address=10.1.1.10: the address is also used by guest a (a.conf); an address belongs to one guest",
		}}},
		{"three guests on one tap", map[string]string{
			"a.conf": guestConf("10.1.1.10", "Tap=tap0"),
			"b.conf": guestConf("10.1.1.11", "Tap=tap0"),
			"c.conf": guestConf("10.1.1.12", "Tap=tap0"),
		}, summary{Failed: []string{
			"a (DIR/a.conf): DIR/a.conf:6: Tap=tap0: the interface is also used by guest b (b.conf); a guest's tap is deleted when the guest stops, so its name must be its own; choose another Tap=",
			"b (DIR/b.conf): DIR/b.conf:6: Tap=tap0: the interface is also used by guest a (a.conf); a guest's tap is deleted when the guest stops, so its name must be its own; choose another Tap=",
			"c (DIR/c.conf): DIR/c.conf:6: Tap=tap0: the interface is also used by guest a (a.conf); a guest's tap is deleted when the guest stops, so its name must be its own; choose another Tap=",
		}}},
		{"several conflicts of one guest", map[string]string{
			"a.conf": guestConf("10.1.1.10", "Tap=tap0"),
			"b.conf": guestConf("10.1.1.10", "Tap=tap0"),
		}, summary{Failed: []string{
			"a (DIR/a.conf): DIR/a.conf:6: Tap=tap0: the interface is also used by guest b (b.conf); a guest's tap is deleted when the guest stops, so its name must be its own; choose another Tap=\n" +
				"DIR/a.conf:5: Address=10.1.1.10: the address is also used by guest b (b.conf); an address belongs to one guest",
			"b (DIR/b.conf): DIR/b.conf:6: Tap=tap0: the interface is also used by guest a (a.conf); a guest's tap is deleted when the guest stops, so its name must be its own; choose another Tap=\n" +
				"DIR/b.conf:5: Address=10.1.1.10: the address is also used by guest a (a.conf); an address belongs to one guest",
		}}},
		{"a broken guest conflicts with none", map[string]string{
			"a.conf": guestConf("10.1.1.10", "Tap=tap0"),
			"b.conf": guestConf("10.1.1.10", "Tap=tap0", "MAC=nonsense"),
		}, summary{Guests: []string{"a"}, Failed: []string{
			"b (DIR/b.conf): DIR/b.conf:7: MAC=nonsense is not a MAC address; write it as xx:xx:xx:xx:xx:xx",
		}}},

		// What guests may share.
		{"same explicit User", map[string]string{
			"a.conf": withGuest("User=uml"),
			"b.conf": withGuest("User=uml"),
			"c.conf": withGuest("User=uml-c"),
		}, summary{Guests: []string{"a", "b", "c"}}},
		{"shared read-only backing image and disk", map[string]string{
			"a.conf": guestConf("10.1.1.10", "[Guest]", "Disk=/srv/data.img:ro"),
			"b.conf": guestConf("10.1.1.11", "[Guest]", "Disk=/srv/data.img:ro"),
			"c.conf": withGuest("Disk=/srv/data.img:ro"),
		}, summary{Guests: []string{"a", "b", "c"}}},
		{"same Bridge", map[string]string{
			"a.conf": guestConf("10.1.1.10/24"),
			"b.conf": guestConf("10.1.1.11/24"),
		}, summary{Guests: []string{"a", "b"}}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			c := newConfDir(t)
			for name, data := range tc.files {
				c.write(name, data)
			}
			if diff := cmp.Diff(tc.want, c.loadAll()); diff != "" {
				t.Errorf("LoadAll (-want +got):\n%s", diff)
			}
		})
	}
}

// TestLoadIgnoresConflicts: one guest loaded alone is checked for its own
// errors only.
func TestLoadIgnoresConflicts(t *testing.T) {
	c := newConfDir(t)
	c.write("a.conf", guestConf("10.1.1.10", "Tap=tap0"))
	c.write("b.conf", guestConf("10.1.1.10", "Tap=tap0"))
	if _, err := c.loader().Load("a"); err != nil {
		t.Errorf("Load(a): %v", err)
	}
}

// TestLoadRefusesDropInNames: a drop-in's name goes into the generated
// unit's comments and the log, so one that could carry a line is refused.
func TestLoadRefusesDropInNames(t *testing.T) {
	c := newConfDir(t)
	c.write("dns.conf", withGuest())
	c.write("dns.conf.d/10-x\n[Service]\nExecStartPre=touch pwned\n#.conf", lines("[Guest]", "Memory=1G"))
	_, err := c.loader().Load("dns")
	want := `"DIR/dns.conf.d/10-x\n[Service]\nExecStartPre=touch pwned\n#.conf": refused: a drop-in's name is letters, digits, dots, dashes, underscores and @; rename it`
	if err == nil || c.hide(err.Error()) != want {
		t.Errorf("Load error = %v, want %s", err, want)
	}
}

// TestLoadRefusesLargeFiles: one huge file must not stall every guest.
func TestLoadRefusesLargeFiles(t *testing.T) {
	c := newConfDir(t)
	c.write("dns.conf", withGuest())
	if err := os.Truncate(c.path("dns.conf"), 8<<30); err != nil { // sparse: no disk used
		t.Fatal(err)
	}
	c.write("web.conf", withGuest())
	got := c.loadAll()
	want := summary{Guests: []string{"web"}, Failed: []string{
		"dns (DIR/dns.conf): DIR/dns.conf: refused: it is larger than 64 KiB, which no guest configuration needs; check what it is",
	}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("LoadAll (-want +got):\n%s", diff)
	}
}

func TestLoadAllRefusesControlCharactersInDir(t *testing.T) {
	_, err := Loader{Dir: "/etc/uml\n[Service]"}.LoadAll()
	want := `"/etc/uml\n[Service]": the configuration directory's path contains a control character; use another`
	if err == nil || err.Error() != want {
		t.Errorf("LoadAll error = %v, want %s", err, want)
	}
}
