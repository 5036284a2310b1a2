// Command imagetool builds the two tiny OCI images the integration suite runs —
// a static pause binary for pod sandboxes and a busybox-static rootfs for
// containers — and hotgpu's own image (`make image-archive`, for hosts with no
// Docker engine), as OCI layout tarballs that `ctr images import` accepts.
// There is no registry on the test machines, so images are made locally.
//
// Output is deterministic (fixed mtimes, owners and ordering): the same inputs
// give the same digests, so a cached image stays valid.
//
// It is not a general image builder: one layer, one platform, no registry.
//
//	go run ./integration/imagetool -kind pause   -ref hotgpu.local/pause:1   -out pause.tar
//	go run ./integration/imagetool -kind busybox -ref hotgpu.local/busybox:1 -out busybox.tar
//	go run ./integration/imagetool -kind hotgpu  -ref hotgpu.local/hotgpu:dev -bin-dir bin -out hotgpu.tar
package main

import (
	"flag"
	"fmt"
	"os"
)

func main() {
	kind := flag.String("kind", "", "image to build: pause, busybox or hotgpu")
	ref := flag.String("ref", "", "image reference, e.g. hotgpu.local/pause:1")
	out := flag.String("out", "", "output tarball path")
	busybox := flag.String("busybox", "/bin/busybox", "static busybox binary (Debian: apt-get install busybox-static)")
	cc := flag.String("cc", "gcc", "C compiler used to build the static pause binary")
	binDir := flag.String("bin-dir", "bin", "hotgpu: dir with hotgpud, hotgpu and hotgpu-hook (make build)")
	config := flag.String("config", "etc/hotgpud.yaml", "hotgpu: the config file put at /etc/hotgpu/hotgpud.yaml")
	flag.Parse()
	if err := run(*kind, *ref, *out, *busybox, *cc, *binDir, *config); err != nil {
		fmt.Fprintln(os.Stderr, "imagetool:", err)
		os.Exit(1)
	}
}

func run(kind, ref, out, busybox, cc, binDir, config string) error {
	if ref == "" || out == "" {
		return fmt.Errorf("-ref and -out are required")
	}
	var (
		files []file
		cfg   imageConfig
		err   error
	)
	switch kind {
	case "pause":
		files, err = pauseFiles(cc)
		cfg = imageConfig{Entrypoint: []string{"/pause"}}
	case "busybox":
		files, err = busyboxFiles(busybox)
		cfg = imageConfig{Cmd: []string{"sh"}}
	case "hotgpu":
		// As the Dockerfile: hotgpud with its config, as nonroot unless the
		// DaemonSet says otherwise (it runs hotgpud as root, and says why).
		files, err = hotgpuFiles(binDir, config)
		cfg = imageConfig{Entrypoint: []string{"/usr/local/bin/hotgpud"}, Cmd: []string{"--config", "/etc/hotgpu/hotgpud.yaml"}, User: "65532:65532"}
	default:
		return fmt.Errorf("unknown -kind %q: want pause, busybox or hotgpu", kind)
	}
	if err != nil {
		return err
	}
	cfg.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cfg.createdBy = "hotgpu imagetool -kind " + kind
	return writeImage(out, ref, files, cfg)
}
