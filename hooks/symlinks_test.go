package hooks

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCreateSymlinks(t *testing.T) {
	_, root, state := bundle(t)
	lib := filepath.Join(root, "usr/lib/x86_64-linux-gnu")
	must(t, os.MkdirAll(lib, 0o755))
	must(t, os.WriteFile(filepath.Join(lib, "libcuda.so.580.95.05"), nil, 0o644))
	links := []string{
		"libcuda.so.580.95.05::/usr/lib/x86_64-linux-gnu/libcuda.so.1",
		"libcuda.so.1::/usr/lib/x86_64-linux-gnu/libcuda.so",
		"libnvidia-ml.so.580.95.05::/usr/lib64/libnvidia-ml.so.1", // a directory the image lacks
	}
	for range 2 { // a restarted container runs the hook again
		if err := (Symlinks{Links: links}).Run(context.Background(), strings.NewReader(state)); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range links {
		target, link, _ := strings.Cut(l, "::")
		if got, err := os.Readlink(filepath.Join(root, link)); err != nil || got != target {
			t.Errorf("%s -> %q (%v), want -> %s", link, got, err, target)
		}
	}
	if data, err := os.ReadFile(filepath.Join(lib, "libcuda.so")); err != nil || len(data) != 0 {
		t.Errorf("libcuda.so does not reach the library through the chain: %v", err)
	}
}

// TestCreateSymlinksStaysInRoot: the container controls its root, so a
// directory on a link's path that is a symlink to the host must be
// resolved inside the root, and a file the image has is never replaced.
func TestCreateSymlinksStaysInRoot(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, root, host string)
	}{
		{"absolute /usr symlink", func(t *testing.T, root, host string) {
			must(t, os.Symlink(host, filepath.Join(root, "usr")))
		}},
		{"relative escape", func(t *testing.T, root, host string) {
			must(t, os.MkdirAll(filepath.Join(root, "usr/lib"), 0o755))
			must(t, os.Symlink("../../../../../../../.."+host, filepath.Join(root, "usr/lib/x86_64-linux-gnu")))
		}},
		{"link path is a symlink to the host", func(t *testing.T, root, host string) {
			must(t, os.MkdirAll(filepath.Join(root, "usr/lib/x86_64-linux-gnu"), 0o755))
			must(t, os.Symlink(filepath.Join(host, "victim"), filepath.Join(root, "usr/lib/x86_64-linux-gnu/libcuda.so")))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, root, state := bundle(t)
			host := t.TempDir()
			tt.setup(t, root, host)
			err := (Symlinks{Links: []string{"libcuda.so.1::/usr/lib/x86_64-linux-gnu/libcuda.so"}}).Run(context.Background(), strings.NewReader(state))
			if entries, _ := os.ReadDir(host); len(entries) != 0 {
				t.Fatalf("wrote on the host: %v (err %v)", entries, err)
			}
		})
	}
	t.Run("the image's own file is kept", func(t *testing.T) {
		_, root, state := bundle(t)
		lib := filepath.Join(root, "usr/lib/x86_64-linux-gnu")
		must(t, os.MkdirAll(lib, 0o755))
		must(t, os.WriteFile(filepath.Join(lib, "libcuda.so"), []byte("image"), 0o644))
		if err := (Symlinks{Links: []string{"libcuda.so.1::/usr/lib/x86_64-linux-gnu/libcuda.so"}}).Run(context.Background(), strings.NewReader(state)); err != nil {
			t.Fatal(err)
		}
		if data, _ := os.ReadFile(filepath.Join(lib, "libcuda.so")); string(data) != "image" {
			t.Errorf("the image's libcuda.so was replaced: %q", data)
		}
	})
}

func TestCreateSymlinksErrors(t *testing.T) {
	_, root, state := bundle(t)
	tests := []struct {
		name  string
		links []string
		want  string
	}{
		{"none", nil, "no --link"},
		{"no separator", []string{"libcuda.so.1"}, "TARGET::LINK"},
		{"empty target", []string{"::/usr/lib/libcuda.so"}, "TARGET::LINK"},
		{"relative link", []string{"libcuda.so.1::usr/lib/libcuda.so"}, "absolute"},
		{"unclean link", []string{"libcuda.so.1::/usr/lib/../../libcuda.so"}, "clean"},
		{"root", []string{"x::/"}, "clean"},
		// A bad link after good ones: nothing is created.
		{"bad after good", []string{"libcuda.so.1::/usr/lib/libcuda.so", "x::y"}, "absolute"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := (Symlinks{Links: tt.links}).Run(context.Background(), strings.NewReader(state))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
			if entries, _ := os.ReadDir(root); len(entries) != 0 {
				t.Errorf("created %v", entries)
			}
		})
	}
}
