package deploy

import (
	"bufio"
	"bytes"
	"path/filepath"
	"strconv"
)

func pathGlob(pattern string) ([]string, error) { return filepath.Glob(pattern) }

func bufioReader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }

func itoa(n int32) string { return strconv.Itoa(int(n)) }

// stripComments drops comment-only lines, so a document of comments alone
// counts as empty.
func stripComments(doc []byte) []byte {
	var out []byte
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			out = append(out, line...)
			out = append(out, '\n')
		}
	}
	return out
}
