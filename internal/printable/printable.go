// Package printable makes text a guest controls safe to show an
// administrator outside its console: in umlctl's output and in the unit's
// status line. A guest decides what its console prints, what its kernel
// answers and what its COW header names; written raw to a terminal, its
// escape sequences could hide or forge lines, set the clipboard or answer
// back as typed input.
package printable

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Line is s on one line: every character that is not printable, newlines
// included, and every byte that is not UTF-8 is written as a Go escape
// (\x1b, \n, \u0085).
func Line(s string) string { return escape(s, false) }

// Text is s with its lines and tabs kept, and every other character that
// is not printable escaped as Line does.
func Text(s string) string { return escape(s, true) }

func escape(s string, keepLines bool) string {
	clean := true
	for _, r := range s {
		if !ok(r, keepLines) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case ok(r, keepLines):
			b.WriteString(s[i : i+n])
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x100:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
		i += n
	}
	return b.String()
}

// ok says whether r may be shown as it is. RuneError is never ok: a
// literal U+FFFD is shown escaped too, which loses nothing.
func ok(r rune, keepLines bool) bool {
	if keepLines && (r == '\n' || r == '\t') {
		return true
	}
	return r != utf8.RuneError && unicode.IsPrint(r)
}
