package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	_ "embed"
)

//go:embed csrc/pause.c
var pauseSource []byte

// file is one entry of the image's single layer.
type file struct {
	name     string // relative, no leading slash
	typeflag byte
	mode     int64
	linkname string
	data     []byte
}

func dir(name string, mode int64) file { return file{name: name, typeflag: tar.TypeDir, mode: mode} }

func reg(name string, mode int64, data []byte) file {
	return file{name: name, typeflag: tar.TypeReg, mode: mode, data: data}
}

// pauseFiles compiles pause.c statically; the binary only needs the kernel.
func pauseFiles(cc string) ([]file, error) {
	tmp, err := os.MkdirTemp("", "imagetool-pause-")
	if err != nil {
		return nil, fmt.Errorf("failed to create temp dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	src := filepath.Join(tmp, "pause.c")
	bin := filepath.Join(tmp, "pause")
	if err := os.WriteFile(src, pauseSource, 0o644); err != nil {
		return nil, fmt.Errorf("failed to write pause.c: %w", err)
	}
	cmd := exec.Command(cc, "-static", "-Os", "-Wall", "-o", bin, src)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("failed to compile pause (needs %s and libc6-dev): %w\n%s", cc, err, out)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return nil, fmt.Errorf("failed to read pause binary: %w", err)
	}
	return []file{reg("pause", 0o755, data)}, nil
}

// applets get a symlink in the busybox image (at the path busybox reports);
// the rest run as `busybox <applet>`. Not all ~270: containerd's overlayfs
// unpack costs ~1.5 ms per entry here, paid at every containerd start.
var applets = map[string]bool{}

func init() {
	for _, a := range strings.Fields(`sh ash [ [[ test true false echo printf cat ls stat mknod mkdir
		rm rmdir mv cp ln chmod chown touch readlink realpath basename dirname grep egrep sed awk
		head tail wc cut tr sort uniq find xargs tee od hexdump dd df du mount umount sleep usleep
		timeout env id whoami hostname uname ps kill pidof date seq expr pwd which sync
		free dmesg nsenter ip nc wget vi less`) {
		applets[a] = true
	}
}

// busyboxFiles lays out a minimal rootfs: busybox, symlinks for the common
// applets, and the files a shell session expects.
func busyboxFiles(busybox string) ([]file, error) {
	data, err := os.ReadFile(busybox)
	if err != nil {
		return nil, fmt.Errorf("failed to read busybox (apt-get install busybox-static): %w", err)
	}
	if !bytes.HasPrefix(data, []byte("\x7fELF")) {
		return nil, fmt.Errorf("%s is not an ELF binary", busybox)
	}
	out, err := exec.Command(busybox, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("failed to list busybox applets: %w", err)
	}
	files := []file{
		dir("bin", 0o755), dir("dev", 0o755), dir("etc", 0o755), dir("proc", 0o755),
		dir("root", 0o700), dir("sbin", 0o755), dir("sys", 0o755), dir("tmp", 0o1777),
		dir("usr", 0o755), dir("usr/bin", 0o755), dir("usr/sbin", 0o755),
		dir("var", 0o755), dir("var/run", 0o755),
		reg("bin/busybox", 0o755, data),
		reg("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")),
		reg("etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n")),
	}
	known := map[string]bool{}
	for _, f := range files {
		known[f.name] = true
	}
	for _, p := range strings.Fields(string(out)) {
		if known[p] || !applets[filepath.Base(p)] || !known[filepath.Dir(p)] {
			continue
		}
		known[p] = true
		files = append(files, file{name: p, typeflag: tar.TypeSymlink, mode: 0o777, linkname: "/bin/busybox"})
	}
	sort.SliceStable(files, func(i, j int) bool { return files[i].name < files[j].name })
	return files, nil
}
