package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"umlsd/internal/testbed"
)

func TestUsage(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"a", "b"},
		{"a", "b", "c", "d"},
		{"--bogus", "a"},
	} {
		var stdout, stderr bytes.Buffer
		if err := run(t.Context(), args, &stdout, &stderr); !errors.Is(err, errUsage) {
			t.Errorf("run(%q) = %v, want a usage error", args, err)
		}
	}
}

// TestProtocol: one directory or three (NORMAL EARLY LATE); only NORMAL is
// written to. The loader insists on root-owned files, so it needs root.
func TestProtocol(t *testing.T) {
	testbed.RequireRoot(t)
	conf := t.TempDir()
	if err := os.WriteFile(filepath.Join(conf, "web.conf"), []byte("[Guest]\nRootImage=/srv/web.img\n[Install]\nWantedBy=multi-user.target\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("UMLSD_CONFIG_DIR", conf)
	t.Setenv("SYSTEMD_LOG_LEVEL", "debug")
	for _, n := range []int{1, 3} {
		dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}[:n]
		var stdout, stderr bytes.Buffer
		if err := run(t.Context(), dirs, &stdout, &stderr); err != nil {
			t.Fatalf("run(%d dirs) = %v; stderr:\n%s", n, err, stderr.String())
		}
		if _, err := os.Stat(filepath.Join(dirs[0], "uml@web.service.d", "10-umlsd.conf")); err != nil {
			t.Errorf("run(%d dirs): no drop-in in NORMAL: %v", n, err)
		}
		if _, err := os.Readlink(filepath.Join(dirs[0], "multi-user.target.wants", "uml@web.service")); err != nil {
			t.Errorf("run(%d dirs): no .wants link: %v", n, err)
		}
		for _, d := range dirs[1:] {
			if entries, _ := os.ReadDir(d); len(entries) != 0 {
				t.Errorf("run(%d dirs) wrote into %s", n, d)
			}
		}
		if !strings.Contains(stderr.String(), "1 guests generated") {
			t.Errorf("SYSTEMD_LOG_LEVEL=debug did not show the summary; stderr:\n%s", stderr.String())
		}
	}

	var stdout, stderr bytes.Buffer
	if err := run(t.Context(), []string{"--dry-run"}, &stdout, &stderr); err != nil {
		t.Fatalf("--dry-run: %v", err)
	}
	if !strings.Contains(stdout.String(), "# uml@web.service.d/10-umlsd.conf") {
		t.Errorf("--dry-run printed:\n%s", stdout.String())
	}
}
