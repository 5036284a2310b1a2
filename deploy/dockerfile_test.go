package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction with continuations joined.
type instruction struct {
	cmd  string // upper case: FROM, COPY, RUN, ...
	args []string
	line int
}

func parseDockerfile(t *testing.T, path string) []instruction {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []instruction
	var cur strings.Builder
	start := 0
	for i, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		cur.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
		if strings.HasSuffix(trimmed, "\\") {
			continue
		}
		fields := strings.Fields(cur.String())
		cur.Reset()
		out = append(out, instruction{cmd: strings.ToUpper(fields[0]), args: fields[1:], line: start})
	}
	return out
}

// TestDockerfile checks what `docker build` would check first and what a
// reader must otherwise trust: every COPY source exists in the build
// context, every command in cmd/ is built and lands in the final image, the
// final stage is small and does not run as root by default.
func TestDockerfile(t *testing.T) {
	root := ".."
	ins := parseDockerfile(t, filepath.Join(root, "Dockerfile"))
	cmds, err := os.ReadDir(filepath.Join(root, "cmd"))
	if err != nil {
		t.Fatal(err)
	}
	var stages []string
	built := map[string]string{} // binary -> output path in the build stage
	buildOut := regexp.MustCompile(`-o (\S+) \./cmd/([a-z0-9-]+)`)
	var finalCopies []string
	user := ""
	for _, in := range ins {
		switch in.cmd {
		case "FROM":
			stages = append(stages, strings.Join(in.args, " "))
			user = ""
		case "RUN":
			for _, m := range buildOut.FindAllStringSubmatch(strings.Join(in.args, " "), -1) {
				built[m[2]] = m[1]
			}
		case "USER":
			user = in.args[0]
		case "COPY":
			from, srcs := copySources(in.args)
			if from != "" {
				if len(stages) > 1 {
					finalCopies = append(finalCopies, srcs...)
				}
				continue
			}
			for _, s := range srcs {
				if matches, _ := filepath.Glob(filepath.Join(root, s)); len(matches) == 0 {
					t.Errorf("Dockerfile:%d: COPY source %q does not exist", in.line, s)
				}
			}
		}
	}
	for _, c := range cmds {
		if !c.IsDir() {
			continue
		}
		out, ok := built[c.Name()]
		if !ok {
			t.Errorf("cmd/%s is not built by the Dockerfile", c.Name())
			continue
		}
		if !slices.Contains(finalCopies, out) {
			t.Errorf("cmd/%s is built to %s but not copied into the final image (copies: %v)", c.Name(), out, finalCopies)
		}
	}
	if len(stages) < 2 {
		t.Fatalf("want a multi-stage build, got stages %v", stages)
	}
	final := stages[len(stages)-1]
	if !strings.Contains(final, "distroless") {
		t.Errorf("final stage %q: want a distroless base", final)
	}
	if user == "" || strings.HasPrefix(user, "0") || user == "root" {
		t.Errorf("final stage runs as %q: want a non-root default user", user)
	}
}

// copySources splits COPY arguments into --from and the sources (all but
// the destination).
func copySources(args []string) (from string, srcs []string) {
	var rest []string
	for _, a := range args {
		switch {
		case strings.HasPrefix(a, "--from="):
			from = strings.TrimPrefix(a, "--from=")
		case strings.HasPrefix(a, "--"):
		default:
			rest = append(rest, a)
		}
	}
	if len(rest) < 2 {
		return from, nil
	}
	return from, rest[:len(rest)-1]
}

func TestCopySources(t *testing.T) {
	from, srcs := copySources([]string{"--from=build", "--chown=1:1", "/a", "/b", "/dst/"})
	if from != "build" || !slices.Equal(srcs, []string{"/a", "/b"}) {
		t.Fatalf("got %q %q", from, srcs)
	}
}

// TestDockerfileBuildsCompile runs every `go build` of the Dockerfile's
// build stage here, with the same environment (CGO_ENABLED, tags), so a
// command that cannot build that way (say, go-nvml without cgo) fails here
// rather than in `docker build`, which cannot run on our machines.
func TestDockerfileBuildsCompile(t *testing.T) {
	if testing.Short() {
		t.Skip("builds every binary; skipped with -short")
	}
	goBuild := regexp.MustCompile(`^((?:[A-Z_]+=\S+ )*)go build .*?(\./cmd/[a-z0-9-]+)$`)
	n := 0
	for _, in := range parseDockerfile(t, filepath.Join("..", "Dockerfile")) {
		if in.cmd != "RUN" {
			continue
		}
		m := goBuild.FindStringSubmatch(strings.TrimSpace(strings.Join(in.args, " ")))
		if m == nil {
			continue
		}
		n++
		cmd := exec.Command("go", "build", "-o", filepath.Join(t.TempDir(), "bin"), m[2])
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), strings.Fields(m[1])...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("Dockerfile:%d: %s%s does not build: %v\n%s", in.line, m[1], m[2], err, tail(string(out), 5))
		}
	}
	if n < 3 {
		t.Fatalf("found %d go build lines in the Dockerfile, want one per binary", n)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
