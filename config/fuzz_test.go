package config

import (
	"bytes"
	"testing"
)

// FuzzParse parses a main file and a drop-in. Parse must never panic, and
// what it accepts Format must write so that it parses to the same guest and
// formats to the same text again.
func FuzzParse(f *testing.F) {
	dnsExample := readDNSExample(f)
	for _, seed := range [][2]string{
		{dnsExample, ""},
		{"[Guest]\nRootImage=/a\nDescription=a\\ \\\n\n", ""},
		{dnsExample, lines("[Network]", "Address=", "Address=10.1.1.11/24 2001:db8::11/64", "[Firewall]", "AcceptIn=")},
		{withGuest("Description=a \\", "# c", "b", "Cow=no", "Disk=/d/1 /d/2:ro", "Memory=1536M", "User=1000", "Group=uml",
			"Chroot=no", "KernelArguments=init=/bin/sh quiet", "Ready=console:^login: $", "ReadyTimeout=1.5min",
			"StopTimeout=infinity", "[Install]", "WantedBy=multi-user.target", "RequiredBy=uml.target"),
			lines("[Guest]", "Memory=", "KernelArguments=", "Ready=tcp:22", "[Network]", "Bridge=br0", "Address=10.1.1.10")},
		{withGuest("[Network]", "Bridge=br0", "Tap=tap0", "MAC=52:54:00:12:34:56", "AntiSpoofing=no",
			"[Firewall]", "AcceptIn=icmp icmp/8 tcp/1000-2000@2001:db8::/32", "HostAccess=icmp/echo-request", "Log=no",
			"[Unit]", "After=network-online.target", "[Service]", "Restart=on-failure", "Environment=A=b",
			"[X-Vendor]", "Key=value"), "[Guest]\r\nX-Note=1\r\nReadyTimeout=9223372036854775807ns\r\n"},
		{"[Guest]\nRootImage=/a\nMemory=8M\n[Bogus]\nRootImage \\\n", "Memory=1G\n[Guest\n\x01"},
	} {
		f.Add([]byte(seed[0]), []byte(seed[1]))
	}
	f.Fuzz(func(t *testing.T, main, dropIn []byte) {
		g, err := Parse("dns", Source{"dns.conf", main}, Source{"dns.conf.d/10.conf", dropIn})
		if err != nil {
			if g != nil {
				t.Fatal("Parse returned a guest beside the error")
			}
			checkErrorPositions(t, err, Source{"dns.conf", main}, Source{"dns.conf.d/10.conf", dropIn})
			return
		}
		checkFormatRoundTrip(t, g)
	})
}

// checkErrorPositions checks that every error names a line of one of the
// files, in the order of the files and lines.
func checkErrorPositions(t *testing.T, err error, srcs ...Source) {
	t.Helper()
	errs, ok := err.(Errors)
	if !ok || len(errs) == 0 {
		t.Fatalf("error is %T with %d errors, want Errors", err, len(errs))
	}
	last := [2]int{}
	for _, e := range errs {
		file := -1
		for i, s := range srcs {
			if s.Path == e.Pos.File {
				file = i
			}
		}
		if file < 0 {
			t.Fatalf("error names no file of the guest: %v", e)
		}
		if n := bytes.Count(srcs[file].Data, []byte("\n")) + 1; e.Pos.Line < 1 || e.Pos.Line > n {
			t.Fatalf("error names line %d of a file with %d lines: %v", e.Pos.Line, n, e)
		}
		if at := [2]int{file, e.Pos.Line}; at[0] < last[0] || at[0] == last[0] && at[1] < last[1] {
			t.Fatalf("errors out of order:\n%v", err)
		} else {
			last = at
		}
	}
}
