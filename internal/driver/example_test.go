package driver_test

import (
	"fmt"
	"os"
	"strings"

	"github.com/hotgpu/hotgpu/internal/driver"
	"github.com/hotgpu/hotgpu/internal/driver/drivertest"
)

// Every path that gives a container a GPU (the CDI spec, the NRI plugin,
// the OCI hook, live attach) gives it the same driver files this way: the
// mounts, then the hooks (or, for a running container, the same links and
// linker cache update done from outside).
func ExampleDriver_Edits() {
	dir, _ := os.MkdirTemp("", "driver-root-")
	defer os.RemoveAll(dir)
	root, _ := drivertest.Build(dir, drivertest.Options{})

	d, err := driver.Discover(root.Dir, root.Version) // the version NVML reports
	if err != nil {
		fmt.Println(err)
		return
	}
	e := d.Edits()
	for _, m := range e.Mounts {
		if strings.Contains(m.ContainerPath, "libcuda.") {
			fmt.Println("mount", m.ContainerPath, m.Options)
		}
	}
	for _, l := range e.Symlinks {
		if strings.Contains(l.Link, "libcuda.") {
			fmt.Println("link", l.Link, "->", l.Target)
		}
	}
	for _, h := range e.Hooks("/usr/local/bin/hotgpu-hook") {
		fmt.Println("hook", h.Args[1])
	}
	// Output:
	// mount /usr/lib/x86_64-linux-gnu/libcuda.so.580.95.05 [ro nosuid nodev bind]
	// link /usr/lib/x86_64-linux-gnu/libcuda.so.1 -> libcuda.so.580.95.05
	// link /usr/lib/x86_64-linux-gnu/libcuda.so -> libcuda.so.1
	// hook create-symlinks
	// hook update-ldcache
}
