package guestimage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// blockSize is the file system's block size; an image is a whole number of
// blocks.
const blockSize = 4096

// mke2fsConf replaces /etc/mke2fs.conf, so the host's defaults change
// nothing. The features are Debian 12's ext4 defaults; mke2fs runs with
// "-T default" rather than picking the "small" or "floppy" type by size, with
// 1 KiB blocks and 128-byte inodes, which have no room for time stamps past
// 2038.
const mke2fsConf = `[defaults]
	base_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
	default_mntopts = acl,user_xattr
	enable_periodic_fsck = 0
	blocksize = 4096
	inode_size = 256
	inode_ratio = 16384

[fs_types]
	ext4 = {
		features = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
	}
`

// makeFS makes an ext4 file system holding the staged tree in the file
// image, then runs the debugfs script on it.
func makeFS(ctx context.Context, image, stage string, size int64, digest [32]byte, script []byte) error {
	work, err := os.MkdirTemp("", "guestimage-e2fs-*")
	if err != nil {
		return fmt.Errorf("creating a work directory: %w", err)
	}
	defer os.RemoveAll(work)
	conf := filepath.Join(work, "mke2fs.conf")
	cmds := filepath.Join(work, "debugfs.cmd")
	if err := os.WriteFile(conf, []byte(mke2fsConf), 0o600); err != nil {
		return fmt.Errorf("writing mke2fs.conf: %w", err)
	}
	if err := os.WriteFile(cmds, script, 0o600); err != nil {
		return fmt.Errorf("writing the debugfs script: %w", err)
	}
	env := []string{
		"MKE2FS_CONFIG=" + conf,
		"E2FSPROGS_FAKE_TIME=" + strconv.Itoa(Epoch),
	}
	// Identifiers from the content and size: the same image gets the same
	// ones, a different image different ones.
	id := sha256.Sum256(append(digest[:], strconv.FormatInt(size, 10)...))
	seed := sha256.Sum256(append(id[:], "hash_seed"...))
	if _, err := runEnv(ctx, env, "mke2fs", "-q", "-F", "-t", "ext4", "-T", "default",
		"-b", strconv.Itoa(blockSize), "-I", "256",
		"-U", uuidFrom(id[:]),
		"-E", "hash_seed="+uuidFrom(seed[:])+",root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0",
		"-d", stage, image); err != nil {
		return fmt.Errorf("making the file system: %w", err)
	}
	// debugfs exits 0 whatever its commands did: any message on stderr
	// besides its banner ("debugfs 1.47.0 (5-Feb-2023)") is an error. Its
	// stdout echoes the commands.
	cmd := newCmd(ctx, env, "debugfs", "-w", "-f", cmds, image)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("running %s: %w: %s", strings.Join(cmd.Args, " "), err, strings.TrimSpace(stderr.String()))
	}
	var msgs []string
	for _, l := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		if v, ok := strings.CutPrefix(l, "debugfs "); l != "" && !(ok && v != "" && v[0] >= '0' && v[0] <= '9') {
			msgs = append(msgs, l)
		}
	}
	if len(msgs) > 0 {
		return fmt.Errorf("running %s: %s", strings.Join(cmd.Args, " "), strings.Join(msgs, "; "))
	}
	return nil
}

// sameContent reports whether the regular file b exists with the content of
// a.
func sameContent(a, b string) (bool, error) {
	sb, err := os.Stat(b)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("checking %s: %w", b, err)
	}
	sa, err := os.Stat(a)
	if err != nil {
		return false, fmt.Errorf("checking %s: %w", a, err)
	}
	if !sb.Mode().IsRegular() || sa.Size() != sb.Size() {
		return false, nil
	}
	fa, err := os.Open(a)
	if err != nil {
		return false, err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return false, err
	}
	defer fb.Close()
	bufA, bufB := make([]byte, 1<<20), make([]byte, 1<<20)
	for {
		na, errA := io.ReadFull(fa, bufA)
		nb, errB := io.ReadFull(fb, bufB)
		for _, err := range []error{errA, errB} {
			if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
				return false, fmt.Errorf("comparing %s with %s: %w", a, b, err)
			}
		}
		if !bytes.Equal(bufA[:na], bufB[:nb]) {
			return false, nil
		}
		if errA != nil || errB != nil { // the end of one: of both?
			return errA != nil && errB != nil, nil
		}
	}
}
