package cow

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// sectorSize is what uml_mkcow and the kernel write; the kernel's I/O is in
// 512-byte sectors whatever the header says.
const sectorSize = 512

// Create does what `uml_mkcow COW BACKING` does: it creates the COW file
// path, a version 3 COW for the backing file as it is now, with the backing
// file's path made absolute as uml_mkcow does (symbolic links in its
// directory resolved, not in its last element). The file is byte for byte
// uml_mkcow's, and as sparse: the header, then a hole up to the last byte of
// the data area, which is written to set the length.
//
// Unlike uml_mkcow, it never overwrites a file, and it removes what it
// created when it fails. It also refuses a backing file that is not a regular
// file, and one whose mtime a v3 header cannot store (before 1970 or after
// 2106), since the kernel would refuse the COW file.
func Create(path, backing string) (err error) {
	abs, err := absolutize(backing)
	if err != nil {
		return fmt.Errorf("creating COW file %s: %w", path, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return fmt.Errorf("creating COW file %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("creating COW file %s: backing file %s is not a regular file", path, abs)
	}
	mtime := fi.ModTime().Unix()
	if mtime < 0 || mtime > math.MaxUint32 {
		return fmt.Errorf("creating COW file %s: backing file %s has mtime %s, which a COW header cannot store (it keeps 32 bits), so the kernel would refuse the COW file; touch the backing file first",
			path, abs, FormatMTime(mtime))
	}
	h := Header{
		Version:    3,
		Backing:    abs,
		MTime:      mtime,
		Size:       fi.Size(),
		SectorSize: sectorSize,
		Alignment:  os.Getpagesize(), // as uml_mkcow (sysconf(_SC_PAGESIZE)) and the kernel
	}
	if err := h.setLayout(roundUp(headerLenV3, uint64(h.Alignment))); err != nil {
		return fmt.Errorf("creating COW file %s: %w", path, err)
	}

	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("creating COW file: %w", err)
	}
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("creating COW file: %w", cerr)
		}
		if err != nil {
			os.Remove(path)
		}
	}()
	if _, err := f.WriteAt(h.encodeV3(), 0); err != nil {
		return fmt.Errorf("creating COW file: %w", err)
	}
	// One byte at the end sets the length and leaves the zero bitmap and the
	// data area a hole, as uml_mkcow does.
	if _, err := f.WriteAt([]byte{0}, h.DataOffset+h.Size-1); err != nil {
		return fmt.Errorf("creating COW file: %w", err)
	}
	return nil
}

// encodeV3 is h's packed big-endian v3 header, zero after the path's NUL.
func (h Header) encodeV3() []byte {
	b := make([]byte, headerLenV3)
	be := binary.BigEndian
	be.PutUint32(b[0:], magic)
	be.PutUint32(b[4:], 3)
	be.PutUint32(b[8:], uint32(h.MTime))
	be.PutUint64(b[12:], uint64(h.Size))
	be.PutUint32(b[20:], uint32(h.SectorSize))
	be.PutUint32(b[24:], uint32(h.Alignment))
	// b[28:32], cow_format, is 0: the bitmap format.
	copy(b[32:], h.Backing)
	return b
}

// absolutize makes backing absolute as cow_user.c's absolutize does: it
// changes into the directory part and appends the rest, including its slash,
// to getcwd(3), which names the directory without symbolic links; a path
// without a slash is appended to the working directory. So a/b/f becomes
// /real/a/b/f even when b is a symbolic link, "a/../f" is taken
// physically, and a symbolic link as the last element stays.
// Where uml_mkcow fails (a path in /, whose directory part is empty), the
// path is kept.
func absolutize(backing string) (string, error) {
	if len(backing) > pathLenV3-1 {
		return "", fmt.Errorf("backing file path is %d bytes, longer than the %d a COW header holds", len(backing), pathLenV3-1)
	}
	if strings.IndexByte(backing, 0) >= 0 {
		return "", fmt.Errorf("backing file path %q contains a NUL byte", backing)
	}
	dir, rest := ".", "/"+backing
	if i := strings.LastIndexByte(backing, '/'); i == 0 {
		return backing, nil
	} else if i > 0 {
		dir, rest = backing[:i], backing[i:]
	}
	phys, err := physicalDir(dir)
	if err != nil {
		return "", err
	}
	abs := phys + rest
	if len(abs) > pathLenV3-1 {
		return "", fmt.Errorf("backing file path %s is %d bytes, longer than the %d a COW header holds", abs, len(abs), pathLenV3-1)
	}
	return abs, nil
}

// physicalDir is what getcwd(3) would say after chdir(dir), without
// changing the working directory, which all goroutines share: the kernel's
// name of the directory, read from /proc/self/fd.
func physicalDir(dir string) (string, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("resolving the directory of the backing file %s: %w", dir, err)
	}
	defer unix.Close(fd)
	phys, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	switch {
	case err == nil && strings.HasPrefix(phys, "/"):
		return phys, nil
	case err == nil:
		// Outside our root, as getcwd(3) would fail for it.
		return "", fmt.Errorf("resolving the directory of the backing file %s: it is unreachable from the root directory (%s)", dir, phys)
	case !errors.Is(err, os.ErrNotExist):
		return "", fmt.Errorf("resolving the directory of the backing file %s: %w", dir, err)
	}
	// Without /proc: the same but for ".." after a symbolic link, which
	// this resolves lexically.
	abs, err := filepath.Abs(dir)
	if err == nil {
		abs, err = filepath.EvalSymlinks(abs)
	}
	if err != nil {
		return "", fmt.Errorf("resolving the directory of the backing file %s: %w", dir, err)
	}
	return abs, nil
}
