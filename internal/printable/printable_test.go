package printable

import "testing"

func TestEscape(t *testing.T) {
	for _, tt := range []struct {
		in, line, text string
	}{
		{"Linux 6.1.176 #1", "Linux 6.1.176 #1", "Linux 6.1.176 #1"},
		{"héllo wörld ✓", "héllo wörld ✓", "héllo wörld ✓"},
		{"a\nb\tc", `a\nb\tc`, "a\nb\tc"},
		{"\x1b[2Kforged\r", `\x1b[2Kforged\r`, `\x1b[2Kforged\r`},
		{"osc \x1b]52;c;aGk=\x07", `osc \x1b]52;c;aGk=\x07`, `osc \x1b]52;c;aGk=\x07`},
		{"c1 \u009b31m del \x7f", `c1 \x9b31m del \x7f`, `c1 \x9b31m del \x7f`},
		{"bad \xff\xfe utf8", `bad \xff\xfe utf8`, `bad \xff\xfe utf8`},
		{"bidi \u202e", `bidi \u202e`, `bidi \u202e`},
		{"", "", ""},
	} {
		if got := Line(tt.in); got != tt.line {
			t.Errorf("Line(%q) = %q, want %q", tt.in, got, tt.line)
		}
		if got := Text(tt.in); got != tt.text {
			t.Errorf("Text(%q) = %q, want %q", tt.in, got, tt.text)
		}
	}
}
