package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// hotgpuBinaries are the image's programs, from -bin-dir, as the Dockerfile
// lays them out.
var hotgpuBinaries = []string{"hotgpud", "hotgpu", "hotgpu-hook"}

// driverLibs are glibc libraries no hotgpu binary links but that the NVIDIA
// driver's libnvidia-ml.so.1, which hotgpud dlopen()s from the driver root,
// needs; the Dockerfile's distroless/base carries them too.
var driverLibs = []string{"libm.so.6", "libdl.so.2", "libpthread.so.0", "librt.so.1"}

// hotgpuFiles lays out the hotgpu image without a Docker engine: the three
// binaries in /usr/local/bin and the example config, plus the glibc runtime
// files the cgo binaries (hotgpud and hotgpu: go-nvml dlopen()s the driver)
// load, copied from this host at the paths its dynamic loader has them.
// hotgpu-hook is static.
func hotgpuFiles(binDir, config string) ([]file, error) {
	files := []file{
		dir("etc", 0o755), dir("etc/hotgpu", 0o755), dir("tmp", 0o1777),
		dir("usr", 0o755), dir("usr/local", 0o755), dir("usr/local/bin", 0o755),
		reg("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")),
		reg("etc/group", 0o644, []byte("root:x:0:\nnonroot:x:65532:\n")),
	}
	cfg, err := os.ReadFile(config)
	if err != nil {
		return nil, fmt.Errorf("failed to read the example config: %w", err)
	}
	files = append(files, reg("etc/hotgpu/hotgpud.yaml", 0o644, cfg))
	libs := map[string]bool{}
	for _, b := range hotgpuBinaries {
		path := filepath.Join(binDir, b)
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("failed to read %s (run make build first): %w", path, err)
		}
		files = append(files, reg("usr/local/bin/"+b, 0o755, data))
		deps, err := sharedLibs(path)
		if err != nil {
			return nil, err
		}
		for _, l := range deps {
			libs[l] = true
		}
	}
	if len(libs) == 0 {
		return nil, fmt.Errorf("no shared library found for hotgpud: it must be built with cgo (go-nvml dlopen()s the driver)")
	}
	libDir := ""
	for l := range libs {
		if filepath.Base(l) == "libc.so.6" {
			libDir = filepath.Dir(l)
		}
	}
	for _, name := range driverLibs {
		if p := filepath.Join(libDir, name); libDir != "" && exists(p) {
			libs[p] = true
		}
	}
	return append(files, libFiles(libs)...), nil
}

// sharedLibs lists the absolute paths of the libraries ldd resolves for a
// binary (none for a static one).
func sharedLibs(bin string) ([]string, error) {
	out, err := exec.Command("ldd", bin).CombinedOutput()
	if err != nil {
		if bytes.Contains(out, []byte("not a dynamic executable")) {
			return nil, nil
		}
		return nil, fmt.Errorf("ldd %s: %w\n%s", bin, err, out)
	}
	var libs []string
	for _, line := range strings.Split(string(out), "\n") {
		for _, f := range strings.Fields(line) {
			if strings.HasPrefix(f, "/") {
				libs = append(libs, f)
			}
		}
	}
	return libs, nil
}

// libFiles copies each library, symlinks resolved, to its path, with the
// parent dirs (a symlinked dir such as Debian's /lib -> usr/lib is made a
// real dir: the image has nothing else there).
func libFiles(libs map[string]bool) []file {
	var files []file
	dirs := map[string]bool{}
	paths := make([]string, 0, len(libs))
	for l := range libs {
		paths = append(paths, l)
	}
	sort.Strings(paths)
	for _, l := range paths {
		data, err := os.ReadFile(l) // follows symlinks
		if err != nil {
			continue
		}
		rel := strings.TrimPrefix(l, "/")
		for d := filepath.Dir(rel); d != "." && !dirs[d]; d = filepath.Dir(d) {
			dirs[d] = true
		}
		files = append(files, reg(rel, 0o755, data))
	}
	for d := range dirs {
		if d != "usr" && d != "etc" && d != "tmp" && d != "usr/local" && d != "usr/local/bin" {
			files = append(files, dir(d, 0o755))
		}
	}
	sort.SliceStable(files, func(i, j int) bool { return files[i].name < files[j].name })
	return files
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
