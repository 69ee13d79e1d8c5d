package supervisor

import (
	"context"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/journal"

	"umlsd/config"
	"umlsd/cow"
	"umlsd/internal/golden"
)

// fakeAccounts is an account database in memory.
type fakeAccounts struct {
	users   map[string]user.User // by name
	created []string
}

func (f *fakeAccounts) LookupUser(name string) (*user.User, error) {
	for _, u := range f.users {
		if u.Username == name || u.Uid == name {
			return &u, nil
		}
	}
	return nil, user.UnknownUserError(name)
}

func (f *fakeAccounts) LookupGroup(name string) (*user.Group, error) {
	if name == "guests" {
		return &user.Group{Gid: "3000", Name: name}, nil
	}
	return nil, user.UnknownGroupError(name)
}

func (f *fakeAccounts) CreateSystemUser(_ context.Context, name, _ string) error {
	f.created = append(f.created, name)
	f.users[name] = user.User{Username: name, Uid: "2001", Gid: "2001"}
	return nil
}

func newFakeAccounts() *fakeAccounts {
	return &fakeAccounts{users: map[string]user.User{
		"uml-dns": {Username: "uml-dns", Uid: "2005", Gid: "2005"},
		"root":    {Username: "root", Uid: "0", Gid: "0"},
		"uml-ok":  {Username: "uml-ok", Uid: "2000", Gid: "2000"},
		"wheel":   {Username: "wheel", Uid: "2002", Gid: "0"},
		"toor":    {Username: "toor", Uid: "0", Gid: "2003"},
	}}
}

// images makes a readable root image and the directory for its COW files.
func images(t *testing.T) (dir, image string) {
	t.Helper()
	dir = t.TempDir()
	// Without a chroot, the guest's user must reach the images.
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	image = filepath.Join(dir, "base.img")
	if err := os.WriteFile(image, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, image
}

func TestPreflightRefuses(t *testing.T) {
	dir, image := images(t)
	kernel := fakeKernelFile(t, dir)
	private := filepath.Join(dir, "private")
	if err := os.Mkdir(private, 0o700); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "script")
	if err := os.WriteFile(script, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	hidden := filepath.Join(private, "hidden.img")
	secret := filepath.Join(dir, "secret.img")
	for _, p := range []string{hidden, secret} {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// A COW made for the image, whose image then changed.
	stale := filepath.Join(dir, "stale.cow")
	if err := cow.Create(stale, image); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(image, later, later); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "other.img")
	if err := os.WriteFile(other, make([]byte, 512), 0o644); err != nil {
		t.Fatal(err)
	}
	foreign := filepath.Join(dir, "foreign.cow")
	if err := cow.Create(foreign, other); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{stale, foreign} {
		if err := os.Chmod(p, 0o666); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name, conf, want string
	}{
		{"missing bridge", "[Network]\nBridge=umlsd-nobr\nAddress=10.0.0.2\n", "Bridge=umlsd-nobr: the bridge umlsd-nobr does not exist"},
		{"root user", "[Guest]\nUser=toor\n", "user toor (User=) is root (uid 0)"},
		{"root group", "[Guest]\nUser=wheel\n", "group is root's (gid 0)"},
		{"unknown user", "[Guest]\nUser=nobody-here\n", "there is no user nobody-here (User=)"},
		{"uid without group", "[Guest]\nUser=4242\n", "set Group= as well"},
		{"missing kernel", "[Guest]\nKernel=/nonexistent/linux\n", "Kernel=/nonexistent/linux is not a program file"},
		{"kernel not ELF", "[Guest]\nKernel=" + script + "\n", "Kernel=" + script + " cannot be run"},
		{"kernel not UML", "[Guest]\nKernel=/usr/bin/true\n", "Kernel=/usr/bin/true: it has no Linux version banner: it is not a Linux kernel; set Kernel= to a User-Mode Linux kernel"},
		{"missing image", "[Guest]\nRootImage=" + dir + "/missing.img\n", "RootImage=" + dir + "/missing.img: no such file or directory"},
		{"unreadable image", "[Guest]\nRootImage=" + secret + "\n", "user uml-ok (uid 2000, gid 2000) may not read it"},
		{"unreachable without chroot", "[Guest]\nRootImage=" + hidden + "\nChroot=no\n", "directory " + private + " does not let it through"},
		{"unwritable disk", "[Guest]\nDisk=" + other + "\n", "may not read and write it"},
		{"stale cow", "[Guest]\nCow=" + stale + "\n", "changed since the COW file was made"},
		{"foreign cow", "[Guest]\nCow=" + foreign + "\n", "was made for backing file " + other},
		{"cow directory missing", "[Guest]\nCow=" + dir + "/no/such.cow\n", "its directory: no such file or directory"},
		{"uid of another guest's default account", "[Guest]\nUser=2005\nGroup=guests\n", "is also the account of guest dns (/etc/uml/dns.conf)"},
	}
	// Guest dns's default account uml-dns has uid 2005 in newFakeAccounts.
	others := []*config.Guest{parseGuest(t, "dns", "[Guest]\nRootImage=/srv/dns.img\n")}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conf := "[Guest]\nKernel=" + kernel + "\nRootImage=" + image + "\nCow=" + dir + "/ok.cow\nUser=uml-ok\n" + tt.conf
			g := parseGuest(t, "g", conf)
			_, err := preflight(context.Background(), newFakeAccounts(), g, others, NewLayout(t.TempDir(), "g"), discardLog{}, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("preflight error = %v, want one containing %q", err, tt.want)
			}
			if got := ExitStatus(err); got != ExitConfig {
				t.Errorf("exit status %d, want %d (not retried)", got, ExitConfig)
			}
		})
	}
}

func TestPreflightPlansTheJail(t *testing.T) {
	dir, image := images(t)
	kernel := fakeKernelFile(t, dir)
	spool := filepath.Join(dir, "spool.img")
	if err := os.WriteFile(spool, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ name, conf string }{
		{"chroot", "Disk=" + spool + ":ro\n"},
		{"nochroot", "Chroot=no\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			db := newFakeAccounts()
			g := parseGuest(t, "web", "[Guest]\nKernel="+kernel+"\nRootImage="+image+"\nCow="+dir+"/web.cow\nMemory=64M\n"+tt.conf)
			p, err := preflight(context.Background(), db, g, nil, NewLayout("/run/uml", "web"), discardLog{}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(db.created) != 1 || db.created[0] != "uml-web" {
				t.Errorf("created accounts %q, want the default uml-web", db.created)
			}
			if !p.makeCow {
				t.Error("the missing COW file is not to be made")
			}
			var b strings.Builder
			fmt.Fprintf(&b, "account %+v\nenv %q\nroot %q\n", p.account, p.env, p.jail.Root)
			for _, m := range p.jail.Mounts {
				target := strings.ReplaceAll(m.Target, dir, "IMAGES")
				if m.Source == "" {
					fmt.Fprintf(&b, "tmpfs %s size=%d mode=%04o uid=%d gid=%d exec=%v\n", target, m.Size, m.Mode, m.UID, m.GID, m.Exec)
					continue
				}
				if m.Source != m.Target {
					t.Errorf("%s bound at %s: not at its host path", m.Source, m.Target)
				}
				fmt.Fprintf(&b, "bind %s ro=%v\n", target, m.ReadOnly)
			}
			golden.Check(t, filepath.Join("testdata", "jail-"+tt.name+".golden"), b.String())
		})
	}
}

// discardLog drops everything.
type discardLog struct{}

func (discardLog) Event(_ journal.Priority, _ string) {}
func (discardLog) Console(string)                     {}
