package deploy

import (
	"bufio"
	"bytes"
	"path/filepath"
	"slices"
	"strconv"
)

// pathGlob lists the manifests; kustomization.yaml is kustomize's, not an
// object (TestKustomization checks it).
func pathGlob(pattern string) ([]string, error) {
	files, err := filepath.Glob(pattern)
	return slices.DeleteFunc(files, func(f string) bool { return filepath.Base(f) == "kustomization.yaml" }), err
}

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
