package hooks

import (
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	oci "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/hotgpu/hotgpu/internal/testenv"
)

// bundle makes a bundle whose config.json has a relative root "rootfs" and
// returns the bundle dir, the root and the OCI state a runtime would send.
func bundle(t *testing.T) (dir, root, state string) {
	t.Helper()
	dir = t.TempDir()
	root = filepath.Join(dir, "rootfs")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	config, _ := json.Marshal(oci.Spec{Version: oci.Version, Root: &oci.Root{Path: "rootfs"}})
	if err := os.WriteFile(filepath.Join(dir, "config.json"), config, 0o644); err != nil {
		t.Fatal(err)
	}
	st, _ := json.Marshal(oci.State{Version: oci.Version, ID: "c1", Status: oci.StateCreating, Pid: 1, Bundle: dir})
	return dir, root, string(st)
}

// fakeLDConfig records its arguments and environment next to itself.
func fakeLDConfig(t *testing.T) (path, record string) {
	t.Helper()
	dir := t.TempDir()
	record = filepath.Join(dir, "record")
	path = filepath.Join(dir, "ldconfig")
	script := "#!/bin/sh\necho \"$@\" > " + record + "\nenv >> " + record + "\n"
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path, record
}

func TestUpdateLDCacheWritesConf(t *testing.T) {
	_, root, state := bundle(t)
	ldconfig, record := fakeLDConfig(t)
	t.Setenv("HOTGPU_TEST_SECRET", "must-not-leak")
	folders := []string{"/usr/lib/x86_64-linux-gnu", "/usr/lib64"}
	// A longer conf from an earlier run (or the image) is replaced whole.
	must(t, os.MkdirAll(filepath.Join(root, filepath.Dir(LDConfPath)), 0o755))
	must(t, os.WriteFile(filepath.Join(root, LDConfPath), []byte(strings.Repeat("/old/lib\n", 100)), 0o644))
	if err := (LDCache{Folders: folders, LDConfig: ldconfig}).Run(context.Background(), strings.NewReader(state)); err != nil {
		t.Fatal(err)
	}
	conf, err := os.ReadFile(filepath.Join(root, LDConfPath))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(conf), "\n/usr/lib/x86_64-linux-gnu\n/usr/lib64\n") {
		t.Errorf("conf = %q", conf)
	}
	got, err := os.ReadFile(record)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(got), "-r "+root+" /usr/lib/x86_64-linux-gnu /usr/lib64\n") {
		t.Errorf("ldconfig args: %q", got)
	}
	if strings.Contains(string(got), "HOTGPU_TEST_SECRET") {
		t.Errorf("ldconfig inherited the caller's environment:\n%s", got)
	}
}

func TestUpdateLDCacheStaysInRoot(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, root, host string)
	}{
		{"symlinked /etc", func(t *testing.T, root, host string) {
			must(t, os.Symlink(host, filepath.Join(root, "etc")))
		}},
		{"symlinked conf dir", func(t *testing.T, root, host string) {
			must(t, os.Mkdir(filepath.Join(root, "etc"), 0o755))
			must(t, os.Symlink("../../../../../../.."+host, filepath.Join(root, "etc", "ld.so.conf.d")))
		}},
		{"symlinked conf file", func(t *testing.T, root, host string) {
			must(t, os.MkdirAll(filepath.Join(root, "etc", "ld.so.conf.d"), 0o755))
			must(t, os.Symlink(filepath.Join(host, "victim"), filepath.Join(root, LDConfPath)))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, root, state := bundle(t)
			host := t.TempDir() // stands for somewhere on the host
			tt.setup(t, root, host)
			ldconfig, _ := fakeLDConfig(t)
			err := (LDCache{Folders: []string{"/usr/lib64"}, LDConfig: ldconfig}).Run(context.Background(), strings.NewReader(state))
			entries, _ := os.ReadDir(host)
			if len(entries) != 0 {
				t.Fatalf("wrote on the host: %v (err %v)", entries, err)
			}
			if err == nil && !confInside(t, root) {
				t.Fatal("no error and no conf file inside the root")
			}
		})
	}
}

func confInside(t *testing.T, root string) bool {
	found := false
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		found = found || (err == nil && d.Type().IsRegular() && d.Name() == filepath.Base(LDConfPath))
		return nil
	})
	return found
}

func TestUpdateLDCacheErrors(t *testing.T) {
	dir, _, state := bundle(t)
	noRoot := t.TempDir()
	must(t, os.WriteFile(filepath.Join(noRoot, "config.json"), []byte(`{"ociVersion":"1.2.0"}`), 0o644))
	tests := []struct {
		name    string
		folders []string
		state   string
		want    string
	}{
		{"no folders", nil, state, "no --folder"},
		{"relative folder", []string{"usr/lib"}, state, "invalid --folder"},
		{"folder with newline", []string{"/usr/lib\ninclude /host"}, state, "invalid --folder"},
		{"not a hook", []string{"/usr/lib"}, "hello", "run by a container runtime"},
		{"relative bundle", []string{"/usr/lib"}, `{"bundle":"x"}`, "absolute"},
		{"missing config", []string{"/usr/lib"}, `{"bundle":"` + filepath.Join(dir, "nope") + `"}`, "config"},
		{"no root", []string{"/usr/lib"}, `{"bundle":"` + noRoot + `"}`, "root.path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := (LDCache{Folders: tt.folders, LDConfig: "/nonexistent"}).Run(context.Background(), strings.NewReader(tt.state))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestUpdateLDCacheRealLDConfig runs the host's ldconfig, which needs root
// (it chroots into the container root).
func TestUpdateLDCacheRealLDConfig(t *testing.T) {
	ldconfig := findLDConfig()
	if ldconfig == "" || os.Geteuid() != 0 {
		testenv.Skip(t, "needs root and a host ldconfig")
	}
	_, root, state := bundle(t)
	if err := (LDCache{Folders: []string{"/usr/lib64"}}).Run(context.Background(), strings.NewReader(state)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/ld.so.cache")); err != nil {
		t.Fatalf("ldconfig did not build the container's cache: %v", err)
	}
}

// runBounded runs the hook in a goroutine and fails the test if it has not
// returned within a deadline far above any honest run: the defect it guards
// against is a hook that never returns.
func runBounded(t *testing.T, l LDCache, state string) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- l.Run(context.Background(), strings.NewReader(state)) }()
	select {
	case err := <-done:
		return err
	case <-time.After(time.Minute):
		t.Fatal("update-ldcache still runs after a minute: container creation would hang")
		return nil
	}
}

// TestUpdateLDCacheNonRegularConf: the image puts a FIFO, or a device node,
// where the hook writes its conf file. Opening a FIFO for writing waits for
// a reader forever; the hook must refuse instead and leave the node alone.
func TestUpdateLDCacheNonRegularConf(t *testing.T) {
	tests := []struct {
		name string
		make func(path string) error
	}{
		{"fifo", func(p string) error { return unix.Mkfifo(p, 0o644) }},
		{"socket", func(p string) error {
			fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			return unix.Bind(fd, &unix.SockaddrUnix{Name: p})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, root, state := bundle(t)
			conf := filepath.Join(root, LDConfPath)
			must(t, os.MkdirAll(filepath.Dir(conf), 0o755))
			must(t, tt.make(conf))
			before, err := os.Lstat(conf)
			must(t, err)
			ldconfig, _ := fakeLDConfig(t)
			err = runBounded(t, LDCache{Folders: []string{"/usr/lib64"}, LDConfig: ldconfig}, state)
			if err == nil || !strings.Contains(err.Error(), "not a regular file") {
				t.Fatalf("err = %v, want a refusal saying the conf path is not a regular file", err)
			}
			after, err := os.Lstat(conf)
			if err != nil || after.Mode() != before.Mode() || !os.SameFile(before, after) {
				t.Errorf("the image's %s was changed: %v %v", LDConfPath, after, err)
			}
		})
	}
}

// TestUpdateLDCacheLDConfigBounded: ldconfig itself reads the image's
// /etc/ld.so.conf; a FIFO there blocks it. The hook's deadline ends it.
func TestUpdateLDCacheLDConfigBounded(t *testing.T) {
	ldconfig := findLDConfig()
	if ldconfig == "" {
		testenv.Skip(t, "needs a host ldconfig")
	}
	testenv.RequireRoot(t, "ldconfig -r chroots into the container root")
	_, root, state := bundle(t)
	must(t, os.MkdirAll(filepath.Join(root, "etc"), 0o755))
	must(t, unix.Mkfifo(filepath.Join(root, "etc", "ld.so.conf"), 0o644))
	err := runBounded(t, LDCache{Folders: []string{"/usr/lib64"}, Timeout: time.Second}, state)
	if err == nil || !strings.Contains(err.Error(), "did not finish") {
		t.Fatalf("err = %v, want ldconfig stopped at the hook's deadline", err)
	}
}
