// Command imagetool builds the two tiny OCI images the integration suite runs —
// a static pause binary for pod sandboxes and a busybox-static rootfs for
// containers — as OCI layout tarballs that `ctr images import` accepts. There is
// no registry on the test machines, so images are made locally.
//
// Output is deterministic (fixed mtimes, owners and ordering): the same inputs
// give the same digests, so a cached image stays valid.
//
// It is not a general image builder: one layer, one platform, no registry.
//
//	go run ./integration/imagetool -kind pause   -ref hotgpu.local/pause:1   -out pause.tar
//	go run ./integration/imagetool -kind busybox -ref hotgpu.local/busybox:1 -out busybox.tar
package main

import (
	"flag"
	"fmt"
	"os"
)

func main() {
	kind := flag.String("kind", "", "image to build: pause or busybox")
	ref := flag.String("ref", "", "image reference, e.g. hotgpu.local/pause:1")
	out := flag.String("out", "", "output tarball path")
	busybox := flag.String("busybox", "/bin/busybox", "static busybox binary (Debian: apt-get install busybox-static)")
	cc := flag.String("cc", "gcc", "C compiler used to build the static pause binary")
	flag.Parse()
	if err := run(*kind, *ref, *out, *busybox, *cc); err != nil {
		fmt.Fprintln(os.Stderr, "imagetool:", err)
		os.Exit(1)
	}
}

func run(kind, ref, out, busybox, cc string) error {
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
	default:
		return fmt.Errorf("unknown -kind %q: want pause or busybox", kind)
	}
	if err != nil {
		return err
	}
	cfg.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cfg.createdBy = "hotgpu imagetool -kind " + kind
	return writeImage(out, ref, files, cfg)
}
