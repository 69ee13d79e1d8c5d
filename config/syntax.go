package config

import (
	"strings"
	"unicode/utf8"
)

// entry is one Key=Value assignment, with where it was written.
type entry struct {
	section string
	key     string
	value   string
	pos     Pos
}

// header is one [Section] line.
type header struct {
	name string
	pos  Pos
}

// syntax is what the lexer found in one file: assignments and section
// headers in file order.
type syntax struct {
	entries []entry
	headers []header
}

// lex splits a file in systemd's unit-file syntax into assignments. It
// reports every malformed line, not only the first.
func lex(file string, data []byte) (syntax, Errors) {
	var (
		out     syntax
		errs    Errors
		section string
		// sawHeader is set by the first header line, valid or not.
		sawHeader bool
		// A continued assignment accumulates here until its last line.
		cont      []byte
		contStart int
	)
	flush := func(text string, line int) {
		if len(text) == 0 {
			return
		}
		p := Pos{File: file, Line: line}
		if text[0] == '[' {
			sawHeader = true
			name, ok := sectionName(text)
			if !ok {
				errs.add(p, "%q is not a valid section header; write it as [Name]", text)
				section = ""
				return
			}
			section = name
			out.headers = append(out.headers, header{name, p})
			return
		}
		eq := strings.IndexByte(text, '=')
		if eq < 0 {
			errs.add(p, "%q is neither a Key=Value assignment, a [Section] header nor a comment", text)
			return
		}
		key := strings.TrimSpace(text[:eq])
		if !validKey(key) {
			errs.add(p, "%q is not a valid key name; keys are letters, digits and dashes", key)
			return
		}
		if section == "" {
			if !sawHeader {
				errs.add(p, "%s= comes before any section; put it under a [Section] header", key)
			}
			return // under a malformed header: already reported
		}
		value := strings.TrimSpace(text[eq+1:])
		if n := len(value) - len(strings.TrimRight(value, `\`)); n%2 == 1 {
			// A continuation ended by a blank line or the end of the file
			// ("a\ \"): written to a unit, it would swallow the next line.
			errs.add(p, "the value of %s= ends with a backslash, which systemd would join with the next line; remove it", key)
			return
		}
		out.entries = append(out.entries, entry{section, key, value, p})
	}

	// Keys and values are substrings of one copy of the file: a string per
	// line would be most of the parser's allocations.
	rest := strings.TrimPrefix(string(data), "\ufeff") // a byte-order mark, as systemd skips it
	out.entries = make([]entry, 0, strings.Count(rest, "\n")+1)
	line := 0
	for len(rest) > 0 {
		line++
		var raw string
		if i := strings.IndexByte(rest, '\n'); i >= 0 {
			raw, rest = rest[:i], rest[i+1:]
		} else {
			raw, rest = rest, ""
		}
		raw = strings.TrimSuffix(raw, "\r")
		if bad, ok := checkText(raw); !ok {
			errs.add(Pos{file, line}, "the line contains %s; remove it", bad)
			continue
		}
		text := strings.TrimSpace(raw)
		if len(text) > 0 && (text[0] == '#' || text[0] == ';') {
			continue // comments are skipped, also inside a continuation
		}
		if cont == nil && len(text) == 0 {
			continue
		}
		if cont == nil {
			contStart = line
		}
		// An odd number of trailing backslashes continues the line; an
		// even number is escaped backslashes, as systemd reads it.
		if n := len(text) - len(strings.TrimRight(text, `\`)); n%2 == 1 {
			cont = append(append(cont, text[:len(text)-1]...), ' ')
			continue
		}
		if cont != nil {
			text = string(append(cont, text...))
			cont = nil
		}
		flush(strings.TrimSpace(text), contStart)
	}
	if cont != nil { // a continuation on the last line ends the value
		flush(strings.TrimSpace(string(cont)), contStart)
	}
	return out, errs
}

func sectionName(text string) (string, bool) {
	if len(text) < 3 || text[len(text)-1] != ']' {
		return "", false
	}
	name := text[1 : len(text)-1]
	if strings.ContainsAny(name, "[] \t") {
		return "", false
	}
	return name, true
}

func validKey(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// checkText refuses what must never reach a generated unit or a kernel
// command line: invalid UTF-8 and control characters other than tab.
func checkText(b string) (string, bool) {
	for i := 0; i < len(b); {
		c := b[i]
		if c < utf8.RuneSelf {
			if c < 0x20 && c != '\t' || c == 0x7f {
				return "a control character", false
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(b[i:])
		if r == utf8.RuneError && n == 1 {
			return "bytes that are not UTF-8", false
		}
		if r >= 0x80 && r < 0xa0 || r == 0x2028 || r == 0x2029 {
			return "a control character", false
		}
		i += n
	}
	return "", true
}
