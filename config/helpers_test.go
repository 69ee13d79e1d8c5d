package config

import (
	"net"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// rootImage is the RootImage= of every test guest that does not set its own.
const rootImage = "/srv/uml/root.img"

// lines joins lines into a file's contents, each ended by a newline.
func lines(ls ...string) string { return strings.Join(ls, "\n") + "\n" }

// withGuest prepends a [Guest] section with RootImage= to the given lines,
// which therefore start inside [Guest] at line 3.
func withGuest(ls ...string) string {
	return lines(append([]string{"[Guest]", "RootImage=" + rootImage}, ls...)...)
}

// parse parses one main file NAME.conf.
func parse(name, data string) (*Guest, error) {
	return Parse(name, Source{Path: name + ".conf", Data: []byte(data)})
}

// parseFiles parses a main file and drop-ins given as path, contents pairs.
func parseFiles(name string, pathsAndData ...string) (*Guest, error) {
	var srcs []Source
	for i := 0; i+1 < len(pathsAndData); i += 2 {
		srcs = append(srcs, Source{Path: pathsAndData[i], Data: []byte(pathsAndData[i+1])})
	}
	return Parse(name, srcs...)
}

// mustParse parses a file that must be valid.
func mustParse(t *testing.T, name, data string) *Guest {
	t.Helper()
	g, err := parse(name, data)
	if err != nil {
		t.Fatalf("Parse(%q) failed:\n%v\nfile:\n%s", name, err, data)
	}
	return g
}

// errText is the whole text of err, or "" for none.
func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// defaultGuest is what withGuest() parses to for a guest called name.
func defaultGuest(name string) *Guest {
	return &Guest{
		Name:            name,
		Path:            name + ".conf",
		Description:     "User-Mode Linux guest " + name,
		Kernel:          DefaultKernel,
		KernelIsDefault: true,
		RootImage:       rootImage,
		Cow:             "/var/lib/uml/" + name + "/root.cow",
		Memory:          128 << 20,
		User:            "uml-" + name,
		UserIsDefault:   true,
		Chroot:          true,
		Ready:           Ready{Kind: ReadyKernel},
		ReadyTimeout:    Timespan{D: 90 * time.Second},
		StopTimeout:     Timespan{D: 30 * time.Second},
	}
}

// defaultNetwork is the [Network] of a guest called name with only the
// given bridge and addresses written.
func defaultNetwork(name, bridge string, addrs ...string) *Network {
	n := &Network{Bridge: bridge, Tap: "uml-" + name, MAC: DefaultMAC(name), AntiSpoofing: true}
	for _, a := range addrs {
		n.Addresses = append(n.Addresses, netip.MustParsePrefix(a))
	}
	return n
}

func mac(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func prefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// guestOpts compare guests by what they mean: not where they were read
// from, and regular expressions by their text.
var guestOpts = cmp.Options{
	cmpopts.IgnoreUnexported(Guest{}),
	cmpopts.IgnoreFields(Guest{}, "Path", "DropIns"),
	cmpopts.IgnoreFields(Setting{}, "Pos"),
	valueOpts,
}

// valueOpts compare the value types of the model.
var valueOpts = cmp.Options{
	cmpopts.EquateComparable(netip.Prefix{}, netip.Addr{}),
	cmp.Comparer(func(a, b *regexp.Regexp) bool {
		if a == nil || b == nil {
			return a == b
		}
		return a.String() == b.String()
	}),
	cmpopts.EquateEmpty(),
}

// guestCase is a valid file of guest dns and what it parses to.
type guestCase struct {
	desc string
	src  string
	want func(g *Guest) // edits defaultGuest("dns")
}

// runGuestCases parses each case's file and compares the whole guest.
func runGuestCases(t *testing.T, cases []guestCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.desc, func(t *testing.T) {
			want := defaultGuest("dns")
			tc.want(want)
			got := mustParse(t, "dns", tc.src)
			if diff := cmp.Diff(want, got, guestOpts); diff != "" {
				t.Errorf("Parse mismatch (-want +got):\n%s\nfile:\n%q", diff, tc.src)
			}
		})
	}
}

// checkError compares the whole text of err, "" meaning no error.
func checkError(t *testing.T, want string, err error) {
	t.Helper()
	if diff := cmp.Diff(want, errText(err)); diff != "" {
		t.Errorf("error (-want +got):\n%s", diff)
	}
}

// readDNSExample returns testdata/dns.conf, the DNS bastion of uml.conf(5),
// which the generator's, the command's and the end-to-end tests use too.
func readDNSExample(t testing.TB) string {
	t.Helper()
	data, err := os.ReadFile("testdata/dns.conf")
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
