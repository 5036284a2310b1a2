package hooks

import (
	"context"
	"errors"
	"strings"
	"testing"

	oci "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/hotgpu/hotgpu/internal/driver"
)

// A root that propagates mounts back to the host would show the driver's
// files there too: the hook refuses before mounting anything.
func TestMountDriverRefusesSharedRootfs(t *testing.T) {
	e := &driver.Edits{Mounts: []driver.Mount{{HostPath: "/nonexistent/libcuda.so.1", ContainerPath: "/usr/lib/libcuda.so.1", Options: []string{"ro"}}}}
	c := &container{spec: oci.Spec{Linux: &oci.Linux{RootfsPropagation: "rshared"}}, rootfs: t.TempDir()}
	if err := mountDriver(context.Background(), c, 1, e); !errors.Is(err, ErrSharedRootfs) {
		t.Errorf("rshared root: err = %v, want ErrSharedRootfs", err)
	}
}

// hotgpud's answer is checked like the hook's own flags: a link whose
// target leaves its directory is refused.
func TestLinkTargets(t *testing.T) {
	for name, tc := range map[string]struct {
		link driver.Symlink
		want string
	}{
		"SONAME link":      {driver.Symlink{Target: "libcuda.so.580.95.05", Link: "/usr/lib/libcuda.so.1"}, ""},
		"target elsewhere": {driver.Symlink{Target: "../../etc/shadow", Link: "/usr/lib/libcuda.so.1"}, "a name in the link's directory"},
		"relative link":    {driver.Symlink{Target: "libcuda.so.1", Link: "usr/lib/libcuda.so"}, "clean absolute path"},
	} {
		t.Run(name, func(t *testing.T) {
			err := linkTargets(&driver.Edits{Symlinks: []driver.Symlink{tc.link}})
			if (tc.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
}
