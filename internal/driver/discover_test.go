package driver_test

import (
	"errors"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hotgpu/hotgpu/internal/driver"
	"github.com/hotgpu/hotgpu/internal/driver/drivertest"
)

// wantFiles is what Discover must find in a fake root: every compute
// library of the root's version in its 64-bit directory, the tools, the GSP
// firmware (at /lib/firmware, from under merged /usr) and the ICD file; never a graphics library,
// the stale version or a 32-bit copy.
func wantFiles(r *drivertest.Root) map[string]driver.Kind {
	want := map[string]driver.Kind{driver.OpenCLICD: driver.KindICD}
	for _, l := range drivertest.Compute {
		want[path.Join(drivertest.LibDir, l.Name+"."+r.Version)] = driver.KindLibrary
	}
	for _, b := range drivertest.Binaries {
		want[path.Join("/usr/bin", b)] = driver.KindBinary
	}
	for _, fw := range drivertest.Firmware {
		want[path.Join("/lib/firmware/nvidia", r.Version, fw)] = driver.KindFirmware
	}
	return want
}

func TestDiscoverFakeInstall(t *testing.T) {
	tests := []struct {
		name string
		opts drivertest.Options
	}{
		{name: "through ld.so.cache", opts: drivertest.Options{}},
		{name: "search paths only", opts: drivertest.Options{NoLDCache: true}},
		{name: "simulation's version", opts: drivertest.Options{Version: "550.54.15"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := drivertest.New(t, tt.opts)
			d, err := driver.Discover(r.Dir, r.Version)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]driver.Kind{}
			for _, f := range d.Files {
				if _, dup := got[f.Path]; dup {
					t.Errorf("%s found twice", f.Path)
				}
				got[f.Path] = f.Kind
			}
			want := wantFiles(r)
			for p, k := range want {
				if got[p] != k {
					t.Errorf("%s: kind %q, want %q", p, got[p], k)
				}
			}
			for p := range got {
				if _, ok := want[p]; !ok {
					t.Errorf("found %s, which a compute container must not get", p)
				}
			}
		})
	}
}

func TestEditsLinksAndLDCache(t *testing.T) {
	r := drivertest.New(t, drivertest.Options{})
	d, err := driver.Discover(r.Dir, r.Version)
	if err != nil {
		t.Fatal(err)
	}
	e := d.Edits()
	var want []driver.Symlink
	for _, l := range drivertest.Compute {
		if l.SONAME != "" {
			want = append(want, driver.Symlink{Target: l.Name + "." + r.Version, Link: path.Join(drivertest.LibDir, l.SONAME)})
		}
	}
	want = append(want, driver.Symlink{Target: "libcuda.so.1", Link: drivertest.LibDir + "/libcuda.so"})
	for _, w := range want {
		if !slices.Contains(e.Symlinks, w) {
			t.Errorf("no link %s in %v", w, e.Symlinks)
		}
	}
	if len(e.Symlinks) != len(want) {
		t.Errorf("links %v, want %v", e.Symlinks, want)
	}
	if !slices.Equal(e.LibraryDirs, []string{drivertest.LibDir}) {
		t.Errorf("library dirs %v", e.LibraryDirs)
	}
	for _, m := range e.Mounts {
		same := m.HostPath == filepath.Join(r.Dir, m.ContainerPath)
		if strings.HasPrefix(m.ContainerPath, "/lib/firmware/") {
			same = m.HostPath == filepath.Join(r.Dir, "/usr", m.ContainerPath)
		}
		if !same || !slices.Contains(m.Options, "ro") {
			t.Errorf("mount %+v: want the same path read-only", m)
		}
		if info, err := os.Lstat(m.HostPath); err != nil || info.Mode()&os.ModeSymlink != 0 {
			t.Errorf("mount source %s is a link or missing (%v): links are made in the container", m.HostPath, err)
		}
	}

	hooks := e.Hooks("/opt/hotgpu/bin/hotgpu-hook")
	if len(hooks) != 2 || hooks[0].Args[1] != "create-symlinks" || hooks[1].Args[1] != "update-ldcache" {
		t.Fatalf("hooks %+v: want create-symlinks, then update-ldcache", hooks)
	}
	for _, h := range hooks {
		if h.Path != "/opt/hotgpu/bin/hotgpu-hook" || h.Args[0] != "hotgpu-hook" || len(h.Env) == 0 {
			t.Errorf("hook %+v", h)
		}
	}
	if !slices.Contains(hooks[0].Args, "libcuda.so.1::"+drivertest.LibDir+"/libcuda.so") ||
		!slices.Equal(hooks[1].Args[2:], []string{"--folder", drivertest.LibDir}) {
		t.Errorf("hook args %q / %q", hooks[0].Args, hooks[1].Args)
	}
}

func TestDiscoverDaemonSockets(t *testing.T) {
	r := drivertest.New(t, drivertest.Options{Daemons: true})
	d, err := driver.Discover(r.Dir, r.Version)
	if err != nil {
		t.Fatal(err)
	}
	opts := map[string][]string{}
	for _, m := range d.Edits().Mounts {
		opts[m.ContainerPath] = m.Options
	}
	for _, p := range []string{driver.PersistencedSocket, driver.FabricManagerSocket} {
		if o, ok := opts[p]; !ok || !slices.Contains(o, "ro") {
			t.Errorf("socket %s: mounted %v (%v), want read-only", p, ok, o)
		}
	}
	if o, ok := opts[driver.MPSPipeDir]; !ok || slices.Contains(o, "ro") {
		t.Errorf("MPS pipe dir: mounted %v (%v), want writable", ok, o)
	}
	// Without the daemons, nothing of theirs.
	r = drivertest.New(t, drivertest.Options{})
	d, _ = driver.Discover(r.Dir, r.Version)
	for _, f := range d.Files {
		if f.Kind == driver.KindSocket || f.Kind == driver.KindMPS {
			t.Errorf("found %+v in a root without daemons", f)
		}
	}
}

// move renames a fake root's file and rewrites the links named.
func move(t *testing.T, root, from, to string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(filepath.Join(root, to)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(root, from), filepath.Join(root, to)); err != nil {
		t.Fatal(err)
	}
}

func TestDiscoverOtherLayouts(t *testing.T) {
	t.Run("ld.so.cache points outside the search paths", func(t *testing.T) {
		r := drivertest.New(t, drivertest.Options{NoLDCache: true})
		lib := "libcuda.so." + r.Version
		move(t, r.Dir, path.Join(drivertest.LibDir, lib), "/opt/nvidia/lib64/"+lib)
		if err := os.Symlink(lib, filepath.Join(r.Dir, "opt/nvidia/lib64/libcuda.so.1")); err != nil {
			t.Fatal(err)
		}
		// An absolute link: it must be followed inside the root.
		if err := os.Symlink("/opt/nvidia/lib64", filepath.Join(r.Dir, "nv")); err != nil {
			t.Fatal(err)
		}
		cache := drivertest.LDCache([]drivertest.CacheEntry{{Name: "libcuda.so.1", Path: "/nv/libcuda.so.1", Is64: true}})
		if err := os.WriteFile(filepath.Join(r.Dir, driver.LDCachePath), cache, 0o644); err != nil {
			t.Fatal(err)
		}
		assertLibrary(t, r, "/opt/nvidia/lib64/"+lib, "libcuda.so.1")
	})
	t.Run("Debian nvidia/current", func(t *testing.T) {
		r := drivertest.New(t, drivertest.Options{NoLDCache: true})
		lib := "libnvidia-ml.so." + r.Version
		move(t, r.Dir, path.Join(drivertest.LibDir, lib), path.Join(drivertest.LibDir, "nvidia/current", lib))
		assertLibrary(t, r, path.Join(drivertest.LibDir, "nvidia/current", lib), "libnvidia-ml.so.1")
	})
	t.Run("a 32-bit copy in a 64-bit directory is refused", func(t *testing.T) {
		r := drivertest.New(t, drivertest.Options{NoLDCache: true})
		lib := "libcuda.so." + r.Version
		if err := os.Remove(filepath.Join(r.Dir, drivertest.LibDir, lib)); err != nil {
			t.Fatal(err)
		}
		move(t, r.Dir, "/usr/lib/i386-linux-gnu/"+lib, "/usr/lib64/"+lib)
		d, err := driver.Discover(r.Dir, r.Version)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range d.Files {
			if path.Base(f.Path) == lib {
				t.Errorf("took the 32-bit %s", f.Path)
			}
		}
	})
}

// An inventory without a driver version gets the version libcuda.so.1
// points at, not the stale one beside it.
func TestDiscoverInfersVersion(t *testing.T) {
	r := drivertest.New(t, drivertest.Options{})
	d, err := driver.Discover(r.Dir, "")
	if err != nil || d.Version != r.Version {
		t.Fatalf("Discover(%s, \"\") = %+v, %v; want version %s", r.Dir, d, err, r.Version)
	}
	// Only the files, no links: the one version there.
	r = drivertest.New(t, drivertest.Options{NoLDCache: true})
	for _, p := range []string{"libcuda.so.1", "libnvidia-ml.so.1", "libcuda.so." + drivertest.StaleVersion} {
		_ = os.Remove(filepath.Join(r.Dir, drivertest.LibDir, p))
	}
	if d, err = driver.Discover(r.Dir, ""); err != nil || d.Version != r.Version {
		t.Fatalf("without links: %+v, %v; want version %s", d, err, r.Version)
	}
}

func assertLibrary(t *testing.T, r *drivertest.Root, want, soname string) {
	t.Helper()
	d, err := driver.Discover(r.Dir, r.Version)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(d.Files, func(f driver.File) bool { return path.Base(f.Path) == path.Base(want) })
	if i < 0 || d.Files[i].Path != want || d.Files[i].SONAME != soname {
		t.Fatalf("files %+v: want %s with SONAME %s", d.Files, want, soname)
	}
}

func TestDiscoverErrors(t *testing.T) {
	r := drivertest.New(t, drivertest.Options{})
	tests := []struct {
		name, root, version string
		target              error
		want                []string
	}{
		{name: "driver/library mismatch", root: r.Dir, version: "590.44.01", target: driver.ErrNoDriverLibraries,
			want: []string{"590.44.01", "libcuda.so." + r.Version, drivertest.LibDir, "mismatch", "reboot"}},
		{name: "no driver", root: t.TempDir(), version: r.Version, target: driver.ErrNoDriverLibraries,
			want: []string{"--driver-root", "libcuda.so." + r.Version, "ld.so.cache"}},
		{name: "no version, no driver", root: t.TempDir(), version: "", target: driver.ErrNoDriverLibraries, want: []string{"version is unknown"}},
		{name: "a path as version", root: r.Dir, version: "../../etc", want: []string{"../../etc"}},
		{name: "relative root", root: "run/nvidia/driver", version: r.Version, want: []string{"absolute"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := driver.Discover(tt.root, tt.version)
			if err == nil {
				t.Fatalf("found %+v, want an error", d)
			}
			if tt.target != nil && !errors.Is(err, tt.target) {
				t.Errorf("errors.Is(%v, %v) = false", err, tt.target)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}
