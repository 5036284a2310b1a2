package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// GoBench is one Go benchmark's runs (one value per -count for each unit:
// "ns/op", "B/op", "allocs/op" and whatever it reports itself, e.g. "p99-ms").
type GoBench struct {
	Pkg, Name string
	Metrics   map[string][]float64
}

// GoBenches are results keyed by "pkg.BenchmarkName" (pkg relative, e.g.
// "plugin", "deviceplugin.BenchmarkAllocate/file").
type GoBenches map[string]*GoBench

// RunGoBenchmarks runs `go test -bench` on one package (a relative dir such
// as "./plugin") and adds what it printed to g. A package that is not in the
// tree is skipped with ok false.
func (g GoBenches) Run(ctx context.Context, repo, pkg, pattern string, count int, benchtime string) (ok bool, err error) {
	if _, err := os.Stat(filepath.Join(repo, pkg)); err != nil {
		return false, nil
	}
	args := []string{"test", "-run", "^$", "-bench", pattern, "-benchmem",
		"-count", strconv.Itoa(count), "-benchtime", benchtime, pkg}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = repo
	out, err := cmd.CombinedOutput()
	g.parse(string(out))
	if err != nil {
		return true, fmt.Errorf("`go %s` failed: %w\n%s", strings.Join(args, " "), err, lastLines(string(out), 15))
	}
	return true, nil
}

func (g GoBenches) parse(out string) {
	pkg := ""
	s := bufio.NewScanner(strings.NewReader(out))
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) >= 2 && f[0] == "pkg:" {
			pkg = strings.TrimPrefix(f[1], "github.com/hotgpu/hotgpu/")
			continue
		}
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		if _, err := strconv.Atoi(f[1]); err != nil {
			continue
		}
		name := f[0]
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			if _, err := strconv.Atoi(name[i+1:]); err == nil {
				name = name[:i] // the GOMAXPROCS suffix
			}
		}
		key := pkg + "." + name
		b := g[key]
		if b == nil {
			b = &GoBench{Pkg: pkg, Name: name, Metrics: map[string][]float64{}}
			g[key] = b
		}
		for i := 2; i+1 < len(f); i += 2 {
			if v, err := strconv.ParseFloat(f[i], 64); err == nil {
				b.Metrics[f[i+1]] = append(b.Metrics[f[i+1]], v)
			}
		}
	}
}

// Median is the median of one unit over the runs (0 when absent).
func (b *GoBench) Median(unit string) float64 {
	v := slices.Clone(b.Metrics[unit])
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	if len(v)%2 == 0 {
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return v[len(v)/2]
}

// Summary is "median per op", with its p50/p99 and allocations when reported.
func (b *GoBench) Summary() string {
	s := FormatDuration(time.Duration(b.Median("ns/op"))) + "/op"
	for _, u := range []struct {
		name string
		unit time.Duration
	}{{"p50-ms", time.Millisecond}, {"p99-ms", time.Millisecond}, {"p99-µs", time.Microsecond}} {
		if _, ok := b.Metrics[u.name]; ok {
			name, _, _ := strings.Cut(u.name, "-")
			s += fmt.Sprintf(", %s %s", name, FormatDuration(time.Duration(b.Median(u.name)*float64(u.unit))))
		}
	}
	if _, ok := b.Metrics["allocs/op"]; ok {
		s += fmt.Sprintf(", %.0f allocs", b.Median("allocs/op"))
	}
	return s
}

// Row makes a table row from a benchmark, or nil when it did not run.
func (g GoBenches) Row(key, figure, target, what string) *Row {
	b, ok := g[key]
	if !ok {
		return nil
	}
	return &Row{Figure: figure, Hotgpu: b.Summary(), Baseline: "—", Target: target,
		How: fmt.Sprintf("`%s` in %s, median of %d × `go test -bench`; %s", b.Name, b.Pkg, len(b.Metrics["ns/op"]), what)}
}

// Keys lists the benchmarks of a package, sorted.
func (g GoBenches) Keys(pkg string) []string {
	var out []string
	for k, b := range g {
		if b.Pkg == pkg {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}
