package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"os/user"
	"slices"
	"strconv"
	"strings"

	"umlsd/config"
)

// Account is the host identity a guest's kernel runs as.
type Account struct {
	User     string // as written, or the default uml-NAME
	UID, GID int    // -1 for a default account not created yet
}

// pending says that the account is the guest's default one, to be created
// at its first start: a new account, which owns no file and is in no file's
// group.
func (a Account) pending() bool { return a.UID < 0 }

// describe names the account in a message.
func (a Account) describe() string {
	if a.pending() {
		return fmt.Sprintf("user %s (not created yet, so only the permissions for others apply)", a.User)
	}
	return fmt.Sprintf("user %s (uid %d, gid %d)", a.User, a.UID, a.GID)
}

// accounts finds and creates host accounts: an interface so that tests
// need not edit the host's /etc/passwd.
type accounts interface {
	// LookupUser finds a user by name or numeric uid; it returns
	// user.UnknownUserError (or UnknownUserIdError) when there is none.
	LookupUser(name string) (*user.User, error)
	LookupGroup(name string) (*user.Group, error)
	// CreateSystemUser creates a system user with its own group, no login
	// shell and no home.
	CreateSystemUser(ctx context.Context, name, comment string) error
}

// hostAccounts is the host's account database, changed with useradd.
type hostAccounts struct{}

func (hostAccounts) LookupUser(name string) (*user.User, error) {
	if _, err := strconv.Atoi(name); err == nil {
		return user.LookupId(name)
	}
	return user.Lookup(name)
}

func (hostAccounts) LookupGroup(name string) (*user.Group, error) {
	if _, err := strconv.Atoi(name); err == nil {
		return user.LookupGroupId(name)
	}
	return user.LookupGroup(name)
}

func (hostAccounts) CreateSystemUser(ctx context.Context, name, comment string) error {
	cmd := exec.CommandContext(ctx, "useradd", "--system", "--user-group", "--no-create-home",
		"--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", "--comment", comment, name)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("running %s: %w: %s", strings.Join(cmd.Args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func isUnknown(err error) bool {
	var u user.UnknownUserError
	var uid user.UnknownUserIdError
	var g user.UnknownGroupError
	var gid user.UnknownGroupIdError
	return errors.As(err, &u) || errors.As(err, &uid) || errors.As(err, &g) || errors.As(err, &gid)
}

// resolveAccount finds the account g's kernel runs as, with create creating
// the default one (uml-NAME) on first use; without, that account is
// returned pending. A numeric uid or gid without an entry in the account
// database is allowed, as systemd allows it, but then Group= must say the
// group. Root's uid and gid are refused.
func resolveAccount(ctx context.Context, db accounts, g *config.Guest, create bool) (Account, bool, error) {
	created := false
	u, err := db.LookupUser(g.User)
	if isUnknown(err) && g.UserIsDefault && !create {
		acct, err := account(db, g, Account{User: g.User, UID: -1, GID: -1})
		return acct, false, err
	}
	if isUnknown(err) && g.UserIsDefault {
		// A failure is retried (exit 1): another start of this guest may
		// have created it meanwhile, or the start was stopped.
		if cerr := db.CreateSystemUser(ctx, g.User, "umlsd guest "+g.Name); cerr != nil {
			if u, err = db.LookupUser(g.User); err != nil {
				return Account{}, false, fmt.Errorf("creating the guest's account %s: %w", g.User, cerr)
			}
		} else {
			created = true
			u, err = db.LookupUser(g.User)
		}
	}
	acct := Account{User: g.User, UID: -1, GID: -1}
	switch {
	case err == nil:
		acct.UID, _ = strconv.Atoi(u.Uid)
		acct.GID, _ = strconv.Atoi(u.Gid)
	case isUnknown(err):
		n, convErr := strconv.Atoi(g.User)
		if convErr != nil {
			return Account{}, false, hostErrorf("there is no user %s (User=); create it (useradd --system %s) or remove User= to use the default account", g.User, g.User)
		}
		acct.UID = n
	default:
		return Account{}, false, fmt.Errorf("looking up user %s: %w", g.User, err)
	}
	acct, err = account(db, g, acct)
	return acct, created, err
}

// account completes acct with g's group and checks it: the errors are the
// configuration's, not retried.
func account(db accounts, g *config.Guest, acct Account) (Account, error) {
	if g.Group != "" {
		gr, err := db.LookupGroup(g.Group)
		switch {
		case err == nil:
			acct.GID, _ = strconv.Atoi(gr.Gid)
		case isUnknown(err):
			n, convErr := strconv.Atoi(g.Group)
			if convErr != nil {
				return Account{}, hostErrorf("there is no group %s (Group=); create it (groupadd --system %s) or remove Group= to use the user's own group", g.Group, g.Group)
			}
			acct.GID = n
		default:
			return Account{}, fmt.Errorf("looking up group %s: %w", g.Group, err)
		}
	}
	switch {
	case acct.GID < 0 && !acct.pending():
		return Account{}, hostErrorf("user %s (User=) has no entry in the account database, so it has no primary group; set Group= as well", g.User)
	case acct.UID == 0:
		return Account{}, hostErrorf("user %s (User=) is root (uid 0); a guest kernel must never run as root: name an unprivileged account or remove User=", g.User)
	case acct.GID == 0:
		return Account{}, hostErrorf("the guest's group is root's (gid 0), which can read files meant for root only: set Group= to an unprivileged group")
	}
	return acct, nil
}

// checkShared refuses acct when another guest's kernel would run with the
// same uid, unless both guests name their account with User=. The
// configurations already refuse two guests writing the same User=; this
// catches what they cannot see: a uid written as a number in one and as a
// name in another, or a default account that has an explicit twin.
func checkShared(db accounts, g *config.Guest, acct Account, others []*config.Guest) error {
	// The names acct goes by, found once: not one account lookup (a read
	// of /etc/passwd) per configured guest.
	names := []string{strconv.Itoa(acct.UID)}
	if u, err := db.LookupUser(names[0]); err == nil {
		names = append(names, u.Username)
	}
	for _, o := range others {
		if o.Name == g.Name || !g.UserIsDefault && !o.UserIsDefault || !slices.Contains(names, o.User) {
			continue
		}
		return hostErrorf("the guest's account %s (uid %d) is also the account of guest %s (%s); give each guest its own account, or name the shared one with User= in both", acct.User, acct.UID, o.Name, o.Path)
	}
	return nil
}
