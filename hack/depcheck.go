//go:build ignore

// depcheck fails when a direct dependency of this module has a newer patch
// release (same major.minor) that go.mod has not taken, unless
// docs/security.md lists it under "Held-back dependencies" with a reason.
// It asks the Go module proxy (GOPROXY) for the released versions of each
// module our packages import; nothing else leaves the machine.
//
// With -report it only warns (and exits 0): what the internet published
// since the last commit must not turn the test command red. `make check`
// runs it that way; `make depcheck` is the failing check.
//
// Usage: go run hack/depcheck.go [-allow docs/security.md] [-report]
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

func main() {
	allowFile := flag.String("allow", "docs/security.md", "file whose \"Held-back dependencies\" section lists `module version: reason` lines")
	flag.BoolVar(&report, "report", false, "warn about untaken patch releases instead of failing (exit 0)")
	flag.Parse()
	held, err := heldBack(*allowFile)
	if err != nil {
		fail("%v", err)
	}
	mods, err := directModules()
	if err != nil {
		fail("%v", err)
	}
	var stale []string
	for _, m := range mods {
		next, err := newerPatch(m.Path, m.Version)
		if err != nil {
			skip("failed to list versions of %s: %v (is the module proxy reachable? GOPROXY=%s)", m.Path, err, goenv("GOPROXY"))
		}
		switch {
		case next == "":
			fmt.Printf("ok     %s %s\n", m.Path, m.Version)
		case held[m.Path] != "":
			fmt.Printf("held   %s %s (%s available): %s\n", m.Path, m.Version, next, held[m.Path])
		default:
			fmt.Printf("STALE  %s %s: patch release %s available\n", m.Path, m.Version, next)
			stale = append(stale, fmt.Sprintf("go get %s@%s", m.Path, next))
		}
	}
	if len(stale) > 0 {
		msg := fmt.Sprintf("%d direct dependencies have patch releases not taken. Take them:\n  %s\n"+
			"or list each under \"Held-back dependencies\" in %s with the reason.", len(stale), strings.Join(stale, "\n  "), *allowFile)
		if report {
			fmt.Fprintf(os.Stderr, "\ndepcheck: WARNING: %s\n", msg)
			note("depcheck: WARNING: %d stale direct dependencies (%s)", len(stale), strings.Join(stale, "; "))
			return
		}
		fmt.Fprintf(os.Stderr, "\ndepcheck: %s\n", msg)
		os.Exit(1)
	}
	fmt.Printf("depcheck: %d direct dependencies, none with an untaken patch release\n", len(mods))
}

type module struct{ Path, Version string }

// directModules are the modules that this module's packages (and their
// tests) import directly: go.mod's "// indirect" marks can be stale, imports
// cannot.
func directModules() ([]module, error) {
	out, err := goCmd("list", "-e", "-f", `{{join .Imports "\n"}}{{"\n"}}{{join .TestImports "\n"}}{{"\n"}}{{join .XTestImports "\n"}}`, "./...")
	if err != nil {
		return nil, err
	}
	imports := map[string]bool{}
	self := modulePath() + "/"
	for _, p := range strings.Fields(out) {
		if strings.Contains(strings.Split(p, "/")[0], ".") && !strings.HasPrefix(p, self) {
			imports[p] = true
		}
	}
	args := []string{"list", "-e", "-f", `{{with .Module}}{{.Path}} {{.Version}}{{end}}`}
	for p := range imports {
		args = append(args, p)
	}
	if out, err = goCmd(args...); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var mods []module
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && !seen[f[0]] {
			seen[f[0]] = true
			mods = append(mods, module{f[0], f[1]})
		}
	}
	sort.Slice(mods, func(i, j int) bool { return mods[i].Path < mods[j].Path })
	return mods, nil
}

// newerPatch returns the highest released version of path with the same
// major.minor as cur that is newer than cur, or "".
func newerPatch(path, cur string) (string, error) {
	out, err := goCmd("list", "-m", "-versions", "-json", path)
	if err != nil {
		return "", err
	}
	var m struct{ Versions []string }
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		return "", err
	}
	c, ok := parse(cur)
	if !ok || c.pseudo {
		return "", nil // a pinned commit is a deliberate choice; not a patch question
	}
	best, bestV := "", c
	for _, v := range m.Versions {
		p, ok := parse(v)
		if !ok || p.major != c.major || p.minor != c.minor || !p.releaseLike() {
			continue
		}
		if p.greater(bestV) {
			best, bestV = v, p
		}
	}
	return best, nil
}

type semver struct {
	major, minor, patch int
	pre                 string
	pseudo              bool
}

var semverRE = regexp.MustCompile(`^v(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+incompatible)?$`)
var pseudoRE = regexp.MustCompile(`(^|[.-])\d{14}-[0-9a-f]{12}$`)

func parse(v string) (semver, bool) {
	m := semverRE.FindStringSubmatch(v)
	if m == nil {
		return semver{}, false
	}
	a, _ := strconv.Atoi(m[1])
	b, _ := strconv.Atoi(m[2])
	c, _ := strconv.Atoi(m[3])
	return semver{major: a, minor: b, patch: c, pre: m[4], pseudo: pseudoRE.MatchString(m[4])}, true
}

// releaseLike: a release, or a purely numeric "-N" revision, which some
// projects (go-nvml) use for their releases.
func (s semver) releaseLike() bool {
	if s.pre == "" {
		return true
	}
	_, err := strconv.Atoi(s.pre)
	return err == nil
}

func (s semver) greater(o semver) bool {
	if s.patch != o.patch {
		return s.patch > o.patch
	}
	switch {
	case s.pre == o.pre:
		return false
	case s.pre == "":
		return true // a release is newer than its prerelease
	case o.pre == "":
		return false
	}
	a, aerr := strconv.Atoi(s.pre)
	b, berr := strconv.Atoi(o.pre)
	if aerr == nil && berr == nil {
		return a > b
	}
	return s.pre > o.pre
}

// heldBack reads "- `module` vX.Y.Z: reason" lines under a heading that
// contains "Held-back dependencies".
func heldBack(path string) (map[string]string, error) {
	held := map[string]string{}
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return held, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	in := false
	line := regexp.MustCompile("^[-*] `([^`]+)`[^:]*:\\s*(\\S.*)$")
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		t := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(t, "#") {
			in = strings.Contains(strings.ToLower(t), "held-back dependencies")
			continue
		}
		if m := line.FindStringSubmatch(t); in && m != nil {
			held[m[1]] = m[2]
		}
	}
	return held, sc.Err()
}

func modulePath() string {
	out, _ := goCmd("list", "-m")
	return strings.TrimSpace(out)
}

func goenv(k string) string {
	out, _ := goCmd("env", k)
	return strings.TrimSpace(out)
}

func goCmd(args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("go", args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go %s: %v: %s", strings.Join(args[:2], " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// report is set by -report: warn instead of failing.
var report bool

func fail(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "depcheck: "+format+"\n", a...)
	os.Exit(2)
}

// skip ends a -report run that could not check (no module proxy) with a
// SKIPPED line, listed again at the end of `make check`; without -report it
// fails.
func skip(format string, a ...any) {
	if !report {
		fail(format, a...)
	}
	msg := fmt.Sprintf(format, a...)
	fmt.Fprintf(os.Stderr, "depcheck: SKIPPED: %s\n", msg)
	note("depcheck: SKIPPED: %s", msg)
	os.Exit(0)
}

// note appends a line to $HOTGPU_SKIP_LOG, which `make check` prints at the
// end of the run, so a check that did not run is never silent.
func note(format string, a ...any) {
	path := os.Getenv("HOTGPU_SKIP_LOG")
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, format+"\n", a...)
}
