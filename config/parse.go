package config

import (
	"cmp"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Source is one file's contents: the main file or a drop-in.
type Source struct {
	Path string
	Data []byte
}

// sectionDef describes a typed section.
type sectionDef struct {
	name string
	keys []keyDef
}

// keyDef describes one key of a typed section.
type keyDef struct {
	name string
	list bool // accumulates; an empty assignment clears it
}

// schema lists the typed sections and their keys, in the order uml.conf(5)
// documents them.
var schema = []sectionDef{
	{"Guest", []keyDef{{"Description", false}, {"Kernel", false}, {"RootImage", false}, {"Cow", false},
		{"Disk", true}, {"Memory", false}, {"User", false}, {"Group", false}, {"Chroot", false},
		{"KernelArguments", true}, {"Ready", false}, {"ReadyTimeout", false}, {"StopTimeout", false}}},
	{"Network", []keyDef{{"Bridge", false}, {"Tap", false}, {"MAC", false}, {"Address", true}, {"AntiSpoofing", false}}},
	{"Firewall", []keyDef{{"AcceptIn", true}, {"ConnectOut", true}, {"HostAccess", true}, {"Log", false}}},
	{"Install", []keyDef{{"WantedBy", true}, {"RequiredBy", true}}},
}

// Pass-through sections, copied to the unit.
const (
	sectionUnit    = "Unit"
	sectionService = "Service"
)

// refusal is a group of pass-through keys that would break the supervisor's
// contract with systemd, and why.
type refusal struct {
	keys []string
	why  string
}

var refusedKeys = map[string][]refusal{
	sectionUnit: {
		{[]string{"Description"}, "set Description= in [Guest] instead"},
		{[]string{"SourcePath"}, "the generator points it at this file"},
	},
	sectionService: {
		{[]string{"Type", "ExecStart", "ExecStop", "ExecStopPost", "NotifyAccess", "KillMode", "KillSignal",
			"RestartKillSignal", "SendSIGKILL", "PIDFile", "RemainAfterExit", "GuessMainPID", "BusName"},
			"uml-supervisor is the unit's main process and owns how the guest is started and stopped"},
		{[]string{"User", "Group", "DynamicUser"},
			"uml-supervisor must start as root to prepare the host and drops privileges itself; set User= and Group= in [Guest] instead"},
		{[]string{"RootDirectory", "RootImage"},
			"uml-supervisor builds the guest's jail itself; see Chroot= in [Guest]"},
		{[]string{"PrivateNetwork", "NetworkNamespacePath", "PrivateDevices", "PrivateUsers",
			"RestrictAddressFamilies", "CapabilityBoundingSet", "ProtectKernelTunables", "RestrictNamespaces",
			"DevicePolicy", "DeviceAllow", "ProcSubset", "SecureBits"},
			"it would keep uml-supervisor from preparing the guest's network, devices and jail"},
		{[]string{"ProtectSystem", "ProtectHome"},
			"uml@.service sets what uml-supervisor tolerates; stricter settings keep it from creating the guest's account in /etc and from reaching the images"},
		{[]string{"MemoryDenyWriteExecute", "SystemCallFilter"},
			"the UML kernel needs writable executable memory and ptrace and would not boot"},
		{[]string{"LockPersonality", "Personality"},
			"uml-supervisor runs the kernel without address randomisation, so that the guest gets all its memory, and locks that personality itself"},
		{[]string{"TimeoutSec", "TimeoutStartSec", "TimeoutStopSec"},
			"the generator derives it from ReadyTimeout= and StopTimeout= in [Guest]; set those instead"},
	},
}

// Parse reads one guest's main file and drop-ins (in the order given) into
// a Guest. It does not touch the file system. The error, if any, is Errors.
func Parse(name string, srcs ...Source) (*Guest, error) {
	if !ValidName(name) {
		return nil, Errors{{Msg: fmt.Sprintf("%q is not a guest name; %s", name, nameRule)}}
	}
	d := decoder{vals: make(map[sectionKey][]entry, 16), headers: make(map[string]Pos, 4)}
	for _, src := range srcs {
		syn, lexErrs := lex(src.Path, src.Data)
		d.errs = append(d.errs, lexErrs...)
		d.collect(syn)
	}
	g := &Guest{Name: name}
	if len(srcs) > 0 {
		g.Path = srcs[0].Path
		for _, s := range srcs[1:] {
			g.DropIns = append(g.DropIns, s.Path)
		}
	}
	d.guest(g)
	d.network(g)
	d.firewall(g)
	d.install(g)
	if len(d.errs) > 0 {
		sortErrors(d.errs, srcs)
		if n := len(d.errs); n > maxErrors {
			more := &Error{Pos: d.errs[maxErrors].Pos, Msg: fmt.Sprintf("and %d more errors; fix the ones above first", n-maxErrors)}
			d.errs = append(d.errs[:maxErrors], more)
		}
		return nil, d.errs
	}
	g.claims = d.claims(g)
	return g, nil
}

// sortErrors puts errors in the order of the files and lines they name.
func sortErrors(errs Errors, srcs []Source) {
	fileIndex := func(name string) int {
		return slices.IndexFunc(srcs, func(s Source) bool { return s.Path == name })
	}
	slices.SortStableFunc(errs, func(a, b *Error) int {
		if c := cmp.Compare(fileIndex(a.Pos.File), fileIndex(b.Pos.File)); c != 0 {
			return c
		}
		return cmp.Compare(a.Pos.Line, b.Pos.Line)
	})
}

// nameRule says what ValidName accepts.
const nameRule = "a guest's name is 1 to 32 lower-case letters, digits, dashes and underscores, starting with a letter or digit"

// maxErrors bounds the errors reported per guest: past that, the file is
// probably not a configuration at all.
const maxErrors = 20

// ValidName reports whether s may name a guest: ^[a-z0-9][a-z0-9_-]{0,31}$.
func ValidName(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i, c := range []byte(s) {
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || i > 0 && (c == '-' || c == '_')
		if !ok {
			return false
		}
	}
	return true
}

// sectionKey names a key of a section.
type sectionKey struct{ section, key string }

type decoder struct {
	// vals holds, per key, the assignments in effect: the last
	// one of a single-valued key, all since the last reset of a list.
	vals    map[sectionKey][]entry
	headers map[string]Pos // first header of each section
	unit    []Setting
	service []Setting
	errs    Errors
}

func (d *decoder) collect(syn syntax) {
	for _, h := range syn.headers {
		if _, seen := d.headers[h.name]; seen {
			continue
		}
		d.headers[h.name] = h.pos
		if !knownSection(h.name) && !strings.HasPrefix(h.name, "X-") {
			hint := ""
			if n, ok := nearest(h.name, sectionNames()); ok {
				hint = "; did you mean [" + n + "]?"
			}
			d.errs.add(h.pos, "[%s] is not a section of uml.conf%s", h.name, hint)
		}
	}
	for _, e := range syn.entries {
		if strings.HasPrefix(e.key, "X-") || strings.HasPrefix(e.section, "X-") {
			continue // reserved for extensions: ignored
		}
		switch e.section {
		case sectionUnit, sectionService:
			if why := refusedWhy(e.section, e.key); why != "" {
				d.errs.add(e.pos, "%s= cannot be set in [%s]: %s", e.key, e.section, why)
				continue
			}
			s := Setting{Key: e.key, Value: e.value, Pos: e.pos}
			if e.section == sectionUnit {
				d.unit = append(d.unit, s)
			} else {
				d.service = append(d.service, s)
			}
			continue
		}
		def, ok := lookupKey(e.section, e.key)
		if !ok {
			if knownSection(e.section) {
				d.errs.add(e.pos, "%s= is not a key of [%s]%s", e.key, e.section, suggestKey(e.section, e.key))
			}
			continue
		}
		k := sectionKey{e.section, e.key}
		switch {
		case e.value == "":
			delete(d.vals, k) // back to the default, or an empty list
		case def.list:
			d.vals[k] = append(d.vals[k], e)
		default:
			d.vals[k] = []entry{e}
		}
	}
}

func knownSection(name string) bool {
	return name == sectionUnit || name == sectionService ||
		slices.ContainsFunc(schema, func(s sectionDef) bool { return s.name == name })
}

func sectionNames() []string {
	names := []string{}
	for _, s := range schema {
		names = append(names, s.name)
	}
	return append(names, sectionUnit, sectionService)
}

func lookupKey(section, key string) (keyDef, bool) {
	for _, s := range schema {
		if s.name != section {
			continue
		}
		for _, k := range s.keys {
			if k.name == key {
				return k, true
			}
		}
	}
	return keyDef{}, false
}

func refusedWhy(section, key string) string {
	for _, r := range refusedKeys[section] {
		if slices.Contains(r.keys, key) {
			return r.why
		}
	}
	return ""
}

// suggestKey says where an unknown key probably belongs.
func suggestKey(section, key string) string {
	for _, s := range schema {
		for _, k := range s.keys {
			if strings.EqualFold(k.name, key) && s.name != section {
				return fmt.Sprintf("; %s= belongs in [%s]", k.name, s.name)
			}
		}
	}
	var names []string
	for _, s := range schema {
		if s.name == section {
			for _, k := range s.keys {
				names = append(names, k.name)
			}
		}
	}
	if n, ok := nearest(key, names); ok {
		return "; did you mean " + n + "=?"
	}
	return ""
}

// single returns the assignment in effect for a single-valued key.
func (d *decoder) single(section, key string) (entry, bool) {
	es := d.vals[sectionKey{section, key}]
	if len(es) == 0 {
		return entry{}, false
	}
	return es[0], true
}

// item is one word of a list assignment.
type item struct {
	value string
	pos   Pos
}

// list returns the words of a list key, in order.
func (d *decoder) list(section, key string) []item {
	var items []item
	for _, e := range d.vals[sectionKey{section, key}] {
		for w := range strings.FieldsSeq(e.value) {
			items = append(items, item{w, e.pos})
		}
	}
	return items
}

// where says where a key was set, or would be missing.
func (d *decoder) where(section, key, file string) Pos {
	if e, ok := d.single(section, key); ok {
		return e.pos
	}
	return d.missingPos(section, file)
}

// missingPos is where to report a missing key: the section's header, or
// the first line of the main file when the section is missing too.
func (d *decoder) missingPos(section, file string) Pos {
	if p, ok := d.headers[section]; ok {
		return p
	}
	return Pos{File: file, Line: 1}
}

func (d *decoder) bad(e entry, err error) {
	d.errs.add(e.pos, "%s=%s %s", e.key, shorten(e.value), err.Error())
}

func (d *decoder) badItem(key string, it item, err error) {
	d.errs.add(it.pos, "%s=%s %s", key, shorten(it.value), err.Error())
}

// shorten keeps a value echoed in an error readable, and short enough for
// one kernel log record.
func shorten(v string) string {
	const max = 64
	if len(v) <= max {
		return v
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(v[cut]) {
		cut--
	}
	return v[:cut] + "…"
}

// str applies a parser to a single-valued key, leaving *dst alone when the
// key is not set or invalid.
func str[T any](d *decoder, section, key string, dst *T, parse func(string) (T, error)) (entry, bool) {
	e, ok := d.single(section, key)
	if !ok {
		return e, false
	}
	v, err := parse(e.value)
	if err != nil {
		d.bad(e, err)
		return e, false
	}
	*dst = v
	return e, true
}

func (d *decoder) guest(g *Guest) {
	const s = "Guest"
	g.Description = "User-Mode Linux guest " + g.Name
	str(d, s, "Description", &g.Description, func(v string) (string, error) { return v, nil })
	g.Kernel = DefaultKernel
	_, set := str(d, s, "Kernel", &g.Kernel, func(v string) (string, error) { return ParsePath(v, false) })
	g.KernelIsDefault = !set
	str(d, s, "RootImage", &g.RootImage, func(v string) (string, error) { return ParsePath(v, true) })
	if _, set := d.single(s, "RootImage"); !set {
		d.errs.add(d.missingPos(s, g.Path), "RootImage= is missing in [Guest]; set it to the guest's root filesystem image")
	}
	g.Cow = StateDir + "/" + g.Name + "/root.cow"
	str(d, s, "Cow", &g.Cow, func(v string) (string, error) {
		if v == "no" {
			return "", nil
		}
		p, err := ParsePath(v, true)
		if err != nil {
			return "", fmt.Errorf("is neither no nor a usable path: it %s", err)
		}
		return p, nil
	})
	used := map[string]bool{g.RootImage: true, g.Cow: true}
	for _, it := range d.list(s, "Disk") {
		disk := Disk{Path: it.value}
		disk.Path, disk.ReadOnly = strings.CutSuffix(it.value, ":ro")
		p, err := ParsePath(disk.Path, true)
		switch {
		case err != nil:
			d.badItem("Disk", it, err)
		case !disk.ReadOnly && strings.HasSuffix(p, ":ro"):
			// Written back as Disk=p, it would read as a read-only disk.
			d.badItem("Disk", it, fmt.Errorf("names %s, which ends in :ro like a read-only disk; rename the file or use a symbolic link", p))
		case used[p]:
			d.badItem("Disk", it, fmt.Errorf("names %s, which this guest already uses; give each disk its own file", p))
		case len(g.Disks) == 15:
			d.badItem("Disk", it, fmt.Errorf("is one disk too many; UML has ubd1 to ubd15 for further disks"))
		default:
			disk.Path, used[p] = p, true
			g.Disks = append(g.Disks, disk)
		}
	}
	if g.Cow != "" && g.Cow == g.RootImage {
		e, set := d.single(s, "Cow")
		if !set { // the default COW file: blame RootImage=
			e, _ = d.single(s, "RootImage")
		}
		d.errs.add(e.pos, "Cow=%s is the root image itself; give the COW file its own path, or write Cow=no", g.Cow)
	}
	g.Memory = DefaultMemory
	str(d, s, "Memory", &g.Memory, func(v string) (uint64, error) {
		n, err := ParseSize(v)
		if err == nil && n < MinMemory {
			err = fmt.Errorf("is less than the %s a guest needs at least", FormatSize(MinMemory))
		}
		return n, err
	})
	g.User, g.UserIsDefault = "uml-"+g.Name, true
	if _, ok := d.single(s, "User"); ok {
		g.UserIsDefault = false
		str(d, s, "User", &g.User, func(v string) (string, error) { return parseAccount(v, "user") })
	} else if len(g.User) > maxUserName {
		d.errs.add(d.missingPos(s, g.Path), "the default user name %s is longer than %d bytes; set User= in [Guest]", g.User, maxUserName)
	}
	str(d, s, "Group", &g.Group, func(v string) (string, error) { return parseAccount(v, "group") })
	g.Chroot = true
	str(d, s, "Chroot", &g.Chroot, ParseBool)
	for _, it := range d.list(s, "KernelArguments") {
		if managedKernelArg(it.value) {
			d.badItem("KernelArguments", it, fmt.Errorf("is set by uml-supervisor from the configuration; remove it"))
			continue
		}
		if strings.Contains(it.value, `"`) || !isASCII(it.value) {
			d.badItem("KernelArguments", it, fmt.Errorf("contains a double quote or characters outside ASCII, which the kernel would read across words; remove them"))
			continue
		}
		g.KernelArguments = append(g.KernelArguments, it.value)
	}
	str(d, s, "Ready", &g.Ready, ParseReady)
	g.ReadyTimeout = Timespan{D: DefaultReadyTimeout}
	str(d, s, "ReadyTimeout", &g.ReadyTimeout, parsePositiveTimespan)
	g.StopTimeout = Timespan{D: DefaultStopTimeout}
	str(d, s, "StopTimeout", &g.StopTimeout, parsePositiveTimespan)
	g.Unit, g.Service = d.unit, d.service
}

func parsePositiveTimespan(v string) (Timespan, error) {
	t, err := ParseTimespan(v)
	if err == nil && !t.Infinite && t.D <= 0 {
		err = fmt.Errorf("is zero; give a positive time span, or infinity for no limit")
	}
	return t, err
}

// ParseReady parses Ready=.
func ParseReady(v string) (Ready, error) {
	kind, arg, _ := strings.Cut(v, ":")
	switch {
	case v == "kernel":
		return Ready{Kind: ReadyKernel}, nil
	case v == "notify":
		return Ready{Kind: ReadyNotify}, nil
	case kind == "console" && arg != "":
		re, err := regexp.Compile(arg)
		if err != nil {
			return Ready{}, fmt.Errorf("has an invalid regular expression: %v", err)
		}
		return Ready{Kind: ReadyConsole, Pattern: re}, nil
	case kind == "tcp":
		p, err := strconv.ParseUint(arg, 10, 16)
		if err != nil || p == 0 || arg[0] == '+' {
			return Ready{}, fmt.Errorf("has no valid port; write tcp:PORT with PORT from 1 to 65535")
		}
		return Ready{Kind: ReadyTCP, Port: uint16(p)}, nil
	}
	return Ready{}, fmt.Errorf("is not a readiness condition; use kernel, console:REGEX, tcp:PORT or notify")
}

func (d *decoder) network(g *Guest) {
	const s = "Network"
	if _, ok := d.headers[s]; !ok {
		if g.Ready.Kind == ReadyTCP {
			e, _ := d.single("Guest", "Ready")
			d.errs.add(e.pos, "Ready=%s needs the guest's address; add a [Network] section with Address=", e.value)
		}
		return
	}
	n := &Network{AntiSpoofing: true}
	g.Network = n
	str(d, s, "Bridge", &n.Bridge, ParseInterfaceName)
	if _, set := d.single(s, "Bridge"); !set {
		d.errs.add(d.missingPos(s, g.Path), "Bridge= is missing in [Network]; name the existing bridge the guest's tap joins")
	}
	if _, ok := d.single(s, "Tap"); ok {
		str(d, s, "Tap", &n.Tap, ParseInterfaceName)
	} else if n.Tap = "uml-" + g.Name; len(n.Tap) > MaxTapName {
		d.errs.add(d.missingPos(s, g.Path), "the default tap name %s is longer than %d bytes; set Tap= in [Network]", n.Tap, MaxTapName)
	}
	if n.Tap != "" && n.Tap == n.Bridge {
		d.errs.add(d.where(s, "Tap", g.Path), "the tap %s has the name of the bridge; uml-supervisor deletes the tap when the guest stops, so choose another Tap=", n.Tap)
	}
	n.MAC = DefaultMAC(g.Name)
	str(d, s, "MAC", &n.MAC, ParseMAC)
	str(d, s, "AntiSpoofing", &n.AntiSpoofing, ParseBool)
	seen := map[netip.Addr]bool{}
	addrs := d.list(s, "Address")
	for _, it := range addrs {
		p, err := ParseAddress(it.value)
		switch {
		case err != nil:
			d.badItem("Address", it, err)
		case seen[p.Addr()]:
			d.badItem("Address", it, fmt.Errorf("is listed twice; remove one"))
		default:
			seen[p.Addr()] = true
			n.Addresses = append(n.Addresses, p)
		}
	}
	if len(addrs) == 0 && n.AntiSpoofing {
		d.errs.add(d.missingPos(s, g.Path), "Address= is missing in [Network]; list the guest's addresses, or set AntiSpoofing=no to let it use any")
	}
	if g.Ready.Kind == ReadyTCP && len(n.Addresses) == 0 {
		e, _ := d.single("Guest", "Ready")
		d.errs.add(e.pos, "Ready=%s needs the guest's address; add Address= to [Network]", e.value)
	}
}

func (d *decoder) firewall(g *Guest) {
	const s = "Firewall"
	pos, ok := d.headers[s]
	if !ok {
		return
	}
	if g.Network == nil {
		d.errs.add(pos, "[Firewall] filters the guest's network, but there is no [Network] section; add one or remove [Firewall]")
	}
	f := &Firewall{Log: true}
	g.Firewall = f
	rules := func(key string, withPeer bool) []Rule {
		var rs []Rule
		for _, it := range d.list(s, key) {
			r, err := ParseRule(it.value, withPeer)
			if err != nil {
				d.badItem(key, it, err)
				continue
			}
			rs = append(rs, r)
		}
		return rs
	}
	f.AcceptIn = rules("AcceptIn", true)
	f.ConnectOut = rules("ConnectOut", true)
	f.HostAccess = rules("HostAccess", false)
	str(d, s, "Log", &f.Log, ParseBool)
}

func (d *decoder) install(g *Guest) {
	units := func(key string) []string {
		var us []string
		for _, it := range d.list("Install", key) {
			u, err := parseUnitName(it.value)
			if err != nil {
				d.badItem(key, it, err)
				continue
			}
			if !slices.Contains(us, u) {
				us = append(us, u)
			}
		}
		return us
	}
	g.WantedBy = units("WantedBy")
	g.RequiredBy = units("RequiredBy")
}
